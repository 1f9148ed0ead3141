#!/usr/bin/env python
"""Screenshot a TensorBoard dashboard (confusion matrices, PR curves, the Projector) with
headless Chromium.

Trains nothing: given a log or run directory that already holds the summaries (written by the
`confusion_matrix`, `pr_curves` or `embeddings` callback), it starts TensorBoard on 127.0.0.1
with `scripts/tensorboard.py`, waits until TensorBoard lists the dashboard's data, has headless
Chromium load the dashboard (the Images one filtered to the tag), saves the screenshot, and
stops TensorBoard. The Projector draws with WebGL: Chromium then renders with SwiftShader, on
the CPU.

Usage:
    python scripts/screenshot_tensorboard.py LOGDIR [--dashboard images|pr_curves|projector]
                                            [--output tensorboard.png] [--tag confusion_matrix]

Example:
    python scripts/screenshot_tensorboard.py logs/cnn/version_0 --output cm.png
    python scripts/screenshot_tensorboard.py logs/cnn/version_0 --dashboard projector

Exit status: 0 with the screenshot written, 2 on a usage error (no such directory, no
Chromium), 1 when TensorBoard or Chromium fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")
# WebGL (the Projector) without a GPU: Chromium's software renderer.
SOFTWARE_GL = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader")
DASHBOARDS = ("images", "pr_curves", "projector")


def _launcher():
    # Loaded under its own name: `import tensorboard` would find the real package, or this
    # directory's tensorboard.py, depending on sys.path.
    spec = importlib.util.spec_from_file_location("digits_tensorboard_launcher",
                                                  HERE / "tensorboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_url(base_url: str, tag: str, dashboard: str = "images") -> str:
    """The dashboard's page: Images filtered to `tag` (one card per run, images on show),
    PR Curves filtered to `tag` when one is given, or the Projector."""
    base = base_url.rstrip("/")
    if dashboard == "projector":
        return f"{base}/?#projector"
    return f"{base}/?#{dashboard}&tagFilter={urllib.parse.quote(tag)}"


def ready(launcher, base_url: str, dashboard: str, timeout: float, process) -> None:
    """Wait until TensorBoard serves the dashboard's data."""
    if dashboard != "projector":
        launcher.wait_for_tags(base_url, (dashboard,), timeout=timeout, process=process)
        return
    import time

    deadline = time.monotonic() + timeout
    while not launcher.get_json(f"{base_url}/data/plugin/projector/runs"):
        if process.poll() is not None:
            raise RuntimeError("TensorBoard exited")
        if time.monotonic() > deadline:
            raise TimeoutError("no projector data (run with the embeddings callback)")
        time.sleep(0.5)


def chromium_command(chromium: str, url: str, output: Path, profile: Path,
                     window: str = "1400,1000", scale: float = 2.0,
                     budget_ms: int = 15000, webgl: bool = False) -> list[str]:
    """Headless Chromium taking one screenshot of `url` (at `scale` device pixels per CSS px);
    with `webgl`, drawn by SwiftShader, else with no GPU at all."""
    graphics = SOFTWARE_GL if webgl else ("--disable-gpu",)
    return [chromium, *CHROMIUM_FLAGS, *graphics, f"--user-data-dir={profile}",
            f"--window-size={window}", f"--force-device-scale-factor={scale:g}",
            f"--virtual-time-budget={budget_ms}", f"--screenshot={output}", url]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/screenshot_tensorboard.py",
        description="Screenshot TensorBoard's images dashboard (confusion matrices) with "
                    "headless Chromium. Trains nothing.",
    )
    parser.add_argument("logdir", help="a log directory or a run directory with image summaries")
    parser.add_argument("--output", default="tensorboard.png",
                        help="where to save the PNG (default: tensorboard.png)")
    parser.add_argument("--dashboard", choices=DASHBOARDS, default="images",
                        help="which dashboard (default: images)")
    parser.add_argument("--tag", default=None,
                        help="tag filter of the images or PR curves dashboard (default: "
                             "confusion_matrix for images, none for PR curves)")
    parser.add_argument("--port", type=int, default=0, help="TensorBoard's port (default: a free one)")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium binary (default: {CHROMIUM})")
    parser.add_argument("--window-size", default="1400,1000", help="W,H in CSS pixels")
    parser.add_argument("--scale", type=float, default=2.0,
                        help="device pixels per CSS pixel, so that image cards stay legible "
                             "(default: 2)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for TensorBoard, and again for Chromium (default: 120)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logdir = Path(args.logdir)
    if not logdir.is_dir():
        print(f"error: {logdir} is not a directory", file=sys.stderr)
        return 2
    chromium = shutil.which(args.chromium) or (args.chromium if os.access(args.chromium, os.X_OK)
                                               else None)
    if chromium is None:
        print(f"error: Chromium not found at {args.chromium} (apt-get install chromium)",
              file=sys.stderr)
        return 2
    launcher = _launcher()
    port = args.port or launcher.free_port()
    base_url = f"http://127.0.0.1:{port}"
    output = Path(args.output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="digits-screenshot-") as scratch:
        server_log = Path(scratch) / "tensorboard.log"
        with open(server_log, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, str(HERE / "tensorboard.py"), str(logdir.resolve()),
                 "--port", str(port), "--host", "127.0.0.1", "--", "--reload_interval", "2"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            try:
                ready(launcher, base_url, args.dashboard, args.timeout, server)
            except (TimeoutError, RuntimeError) as e:
                tail = server_log.read_text(errors="replace")[-2000:]
                print(f"error: {e}\n{tail}", file=sys.stderr)
                return 1
            tag = args.tag if args.tag is not None else (
                "confusion_matrix" if args.dashboard == "images" else "")
            url = dashboard_url(base_url, tag, args.dashboard)
            webgl = args.dashboard == "projector"
            command = chromium_command(chromium, url, output, Path(scratch) / "profile",
                                       args.window_size, args.scale,
                                       budget_ms=40000 if webgl else 15000, webgl=webgl)
            output.unlink(missing_ok=True)
            # Its own session, so that on a timeout its renderer processes go with it.
            browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL, text=True,
                                       start_new_session=True)
            try:
                _, errors = browser.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(browser.pid, signal.SIGKILL)
                browser.communicate()
                print(f"error: Chromium took longer than {args.timeout:.0f} s", file=sys.stderr)
                return 1
            if browser.returncode != 0 or not output.is_file():
                print(f"error: Chromium failed (status {browser.returncode}):\n{errors[-2000:]}",
                      file=sys.stderr)
                return 1
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=15)
    print(f"screenshot of {url} saved to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
