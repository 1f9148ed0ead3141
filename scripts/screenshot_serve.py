#!/usr/bin/env python
"""Draw digits on `digits.serve`'s page in headless Chromium, read the answer, screenshot it.

Starts `python -m digits.serve --model MODEL --port 0`, opens its page in Debian's Chromium
through Selenium and chromedriver (nothing is downloaded), draws each digit of TEXT with pointer
events along the strokes of a real handwritten digit (the skeleton of a held-out MNIST digit of
that class, traced into pen strokes), waits for the page's reading, saves a screenshot and stops
the server. The test of the page drives the browser with the same functions.

Usage:
    python scripts/screenshot_serve.py --model MODEL [--text 2026] [--output serve.png]

Exit status: 0 when the page read TEXT (screenshot written), 1 when it read something else
(screenshot still written), 2 on a usage error (no model, no Chromium).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def start_server(model: str, *extra: str, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """`digits.serve` on 127.0.0.1 and a free port: the process and its base URL."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "digits.serve", "--model", model, "--port", "0",
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"(http://\S+?)/?\s", line or "")
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"digits.serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    stop_server(proc)
    raise RuntimeError("digits.serve did not start in time")


def stop_server(proc: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM, as a service manager stops it; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def browser(width: int = 1100, height: int = 720, chromium: str = CHROMIUM,
            chromedriver: str = CHROMEDRIVER):
    """Headless Chromium under Selenium, with the system's own chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


def digit_strokes(image: np.ndarray, threshold: float = 0.35) -> list[list[tuple[float, float]]]:
    """The pen strokes of a 28x28 digit (ink bright): its skeleton traced into polylines, in
    pixel coordinates (x, y), longest first."""
    from skimage.morphology import skeletonize

    skeleton = skeletonize(np.asarray(image).reshape(28, 28) > threshold)
    left = {(int(y), int(x)) for y, x in zip(*np.nonzero(skeleton), strict=True)}

    def neighbours(p):
        y, x = p
        near = [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
        # Straight steps before diagonal ones: the walk follows the line, not its corners.
        return sorted((q for q in near if q in left), key=lambda q: abs(q[0] - y) + abs(q[1] - x))

    strokes = []
    while left:
        ends = [p for p in left if len(neighbours(p)) == 1]
        point = min(ends or left)
        path = [point]
        left.discard(point)
        while True:
            following = neighbours(point)
            if not following:
                break
            point = following[0]
            left.discard(point)
            path.append(point)
        strokes.append([(float(x), float(y)) for y, x in path])
    return sorted((s for s in strokes if len(s) >= 2), key=len, reverse=True)


def draw(driver, strokes: list[list[tuple[float, float]]], box: tuple[float, float, float]) -> None:
    """Draw `strokes` (28x28 pixel coordinates) on the page's canvas with pointer events,
    scaled into `box` = (left, top, size) in the canvas's CSS pixels."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "canvas")
    half_w, half_h = canvas.size["width"] / 2, canvas.size["height"] / 2
    left, top, size = box
    for stroke in strokes:
        points = [(left + x / 28 * size - half_w, top + y / 28 * size - half_h) for x, y in stroke]
        actions = ActionChains(driver, duration=0)
        actions.move_to_element_with_offset(canvas, int(points[0][0]), int(points[0][1]))
        actions.click_and_hold()
        for x, y in points[1:]:
            actions.move_to_element_with_offset(canvas, int(x), int(y))
        actions.release()
        actions.perform()


def read_page(driver, timeout: float = 30) -> dict:
    """Wait for the page's answer to what was drawn last: the reading, status and top-1 rows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # The page is "idle" once the answer to the latest drawing is shown (see serve_page.html).
    WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle")
    digits = driver.find_elements(By.CSS_SELECTOR, "#digits .digit")
    return {"reading": driver.find_element(By.ID, "reading").text,
            "status": driver.find_element(By.ID, "status").text,
            "digits": len(digits),
            "inputs": len(driver.find_elements(By.CSS_SELECTOR, "#digits .digit img")),
            "bars": len(driver.find_elements(By.CSS_SELECTOR, "#digits .row"))}


def examples(text: str, seed: int = 0) -> list[np.ndarray]:
    """For each character of `text`, a digit of that class from the embedded digits' held-out
    test part (never trained on by a model of mnist-5k with the same seed)."""
    from digits.data import load_dataset

    test = load_dataset("mnist-5k", seed=seed, announce=False).test
    rng = np.random.default_rng(seed)
    return [test.x[rng.choice(np.flatnonzero(test.y == int(c)))][..., 0] for c in text]


def draw_number(driver, text: str, seed: int = 0) -> None:
    """Draw `text`'s digits side by side across the canvas."""
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "canvas")
    width, height = canvas.size["width"], canvas.size["height"]
    size = min(height * 0.9, width / max(len(text), 1) * 1.1)
    step = min(size * 0.8, (width - size) / max(len(text) - 1, 1))
    start = (width - (step * (len(text) - 1) + size)) / 2
    for k, image in enumerate(examples(text, seed)):
        draw(driver, digit_strokes(image), (start + k * step, (height - size) / 2, size))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model digits.serve can load")
    parser.add_argument("--text", default="2026", help="the digits to draw (default: 2026)")
    parser.add_argument("--output", default="serve.png", help="the screenshot (PNG)")
    parser.add_argument("--seed", type=int, default=0, help="which held-out digits to draw")
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--chromedriver", default=CHROMEDRIVER)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.text.isdigit():
        print(f"error: --text {args.text!r}: digits only", file=sys.stderr)
        return 2
    for tool in (args.chromium, args.chromedriver):
        if not shutil.which(tool):
            print(f"error: {tool} not found (apt-get install chromium chromium-driver)",
                  file=sys.stderr)
            return 2
    if not os.path.exists(args.model):
        print(f"error: {args.model}: no such model", file=sys.stderr)
        return 2
    server, url = start_server(args.model)
    driver = None
    try:
        driver = browser(chromium=args.chromium, chromedriver=args.chromedriver)
        driver.get(url + "/")
        draw_number(driver, args.text, args.seed)
        answer = read_page(driver)
        driver.save_screenshot(args.output)
    finally:
        if driver is not None:
            driver.quit()
        stop_server(server)
    print(f"drew {args.text}, the page read {answer['reading']!r} ({answer['status']}); "
          f"screenshot {args.output}")
    return 0 if answer["reading"] == args.text else 1


if __name__ == "__main__":
    raise SystemExit(main())
