"""The bench's `deploy` section: every export of a trained model, and `digits.serve` under load.

For each format and quantization `digits.export` offers: the file's size, the largest
difference of its probabilities from the `.keras` model's, their agreement and accuracy on the
official test set, the single-image latency and the export's time (all through
`digits.export.export`, the command's own code). Then `digits.serve` for the `.keras` model and
for the export with the lowest single-image latency (the fast path), each under a bounded local
load: `CLIENTS` keep-alive clients on 127.0.0.1 posting a drawn digit (a canvas-sized PNG, as
the page sends) back to back for `SECONDS`; requests per second and latency percentiles.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

import numpy as np

import digits
from benchmarks.common import Bench, Table, progress, quiet_stdout, script_module, subset

EXPORTS = (("saved_model", None), ("onnx", None), ("onnx", "int8"), ("onnx", "float16"),
           ("litert", None), ("litert", "int8"), ("litert", "float16"))
CLIENTS = 8
SECONDS = 10.0


def _screenshot_serve():
    """scripts/screenshot_serve.py: the server's start and stop, a digit's strokes."""
    return script_module("screenshot_serve")


def drawn_digit_png(image: np.ndarray, width: int = 560, height: int = 280) -> bytes:
    """A digit as the page's canvas sends it: black pen strokes (its skeleton, traced) on a
    white canvas of the page's size, as PNG."""
    from PIL import Image, ImageDraw

    tool = _screenshot_serve()
    canvas = Image.new("L", (width, height), 255)
    pen = ImageDraw.Draw(canvas)
    size, left, top = height * 0.9, (width - height * 0.9) / 2, height * 0.05
    for stroke in tool.digit_strokes(image):
        points = [(left + x / 28 * size, top + y / 28 * size) for x, y in stroke]
        pen.line(points, fill=0, width=round(height / 12), joint="curve")
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


async def _client(host: str, port: int, body: bytes, until: float, latencies: list[float],
                  failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if b" 200 " not in status:
                failures.append(status.decode(errors="replace").strip())
    finally:
        writer.close()


def load(url: str, body: bytes, clients: int = CLIENTS, seconds: float = SECONDS) -> dict:
    """`clients` keep-alive connections posting `body` back to back for `seconds`."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    latencies: list[float] = []
    failures: list[str] = []

    async def main():
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(host, int(port), body, until, latencies, failures)
                               for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(q):
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

    return {"requests": len(latencies), "failures": len(failures), "seconds": elapsed,
            "requests_per_second": len(latencies) / elapsed, "p50_ms": pct(0.50),
            "p90_ms": pct(0.90), "p99_ms": pct(0.99), "clients": clients}


def single(url: str, body: bytes, requests: int = 200) -> dict:
    """One client, one request at a time: the latency of a drawn digit with no queue."""
    import http.client

    latencies = []
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    for _ in range(requests):
        start = time.perf_counter()
        connection.request("POST", "/api/predict", body, {"Content-Type": "image/png"})
        connection.getresponse().read()
        latencies.append(time.perf_counter() - start)
    connection.close()
    ordered = sorted(latencies)
    return {"p50_ms": 1000 * ordered[len(ordered) // 2],
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def measure(model: Path, data, tmp: Path, exports=None, serve_seconds: float = SECONDS,
            serve_all: bool = True, progress=print) -> dict:
    """Every export of `model` (or those named in `exports`) checked on `data.test`, then the
    server under load, for the `.keras` model and the fastest export."""
    from digits.deploy.runtimes import KerasRuntime
    from digits.export import export

    source = KerasRuntime(str(model))
    chosen, exports = exports or EXPORTS, {}
    tmp.mkdir(parents=True, exist_ok=True)
    for fmt, quantize in chosen:
        label = fmt + (f" {quantize}" if quantize else "")
        progress(f"deploy: exporting {label}")
        output = tmp / (f"model{'.' + quantize if quantize else ''}"
                        + {"saved_model": "_saved_model", "onnx": ".onnx", "litert": ".tflite"}[fmt])
        exports[label] = {**export(source, fmt, output, quantize=quantize, data=data),
                          "path": str(output)}
    fast = min(exports, key=lambda k: exports[k]["exported"]["latency_ms"])
    tool = _screenshot_serve()
    body = drawn_digit_png(data.test.x[int(np.flatnonzero(data.test.y == 7)[0])][..., 0])
    served = {}
    servers = [("keras", str(model), 1), (fast, exports[fast]["path"], 1),
               (f"{fast}, 2 workers", exports[fast]["path"], 2)]
    for label, path, workers in servers if serve_all else servers[1:2]:
        progress(f"deploy: serving {label} under {CLIENTS} clients for {serve_seconds:.0f} s")
        proc, url = tool.start_server(path, "--workers", str(workers))
        try:
            # Every worker up and warm: each loads the model on its own after the start.
            load(url, body, clients=CLIENTS, seconds=max(0.5, serve_seconds / 3))
            alone = single(url, body, requests=200 if serve_all else 20)
            served[label] = {**load(url, body, seconds=serve_seconds), "alone": alone,
                             "path": path, "workers": workers}
        finally:
            tool.stop_server(proc)
    return {"source_bytes": source.describe()["bytes"], "examples": int(len(data.test)),
            "exports": exports, "fast_path": fast, "served": served,
            "request_bytes": len(body)}


def tables(result: dict) -> list[Table]:
    rows = []
    for label, r in result["exports"].items():
        ours, theirs = r["source_model"], r["exported"]
        rows.append((label, f"{theirs['bytes'] / 1024:,.0f} KB",
                     f"{r['max_abs_difference']:.1e}", f"{100 * r['agreement']:.2f}%",
                     f"{100 * theirs['accuracy']:.2f}% ({100 * (theirs['accuracy'] - ours['accuracy']):+.2f})",
                     f"{theirs['latency_ms']:.2f} ms", f"{r['export_seconds']:.1f} s"))
    first = next(iter(result["exports"].values()))["source_model"]
    rows.insert(0, ("keras (source)", f"{result['source_bytes'] / 1024:,.0f} KB", "", "",
                    f"{100 * first['accuracy']:.2f}%", f"{first['latency_ms']:.2f} ms", ""))
    served = []
    for label, r in result["served"].items():
        served.append((label, f"{r['requests_per_second']:.0f}", f"{r['p50_ms']:.1f} ms",
                       f"{r['p99_ms']:.1f} ms", f"{r['alone']['p50_ms']:.1f} / {r['alone']['p99_ms']:.1f} ms",
                       str(r["failures"])))
    return [
        Table("Exports", ("format", "size", "largest probability difference",
                          "same class", "test accuracy (change)", "1 image", "export"), rows,
              [f"`python -m digits.export` of the model below, checked on {result['examples']:,} "
               "test images; '1 image': median of 50 single-image calls of the runtime "
               "(Keras' predict_on_batch, TensorFlow, ONNX Runtime, LiteRT's interpreter)."]),
        Table("Serving a drawn digit", ("model", "requests/s", "p50", "p99",
                                        "one client p50 / p99", "failures"), served,
              [f"`python -m digits.serve`, {CLIENTS} keep-alive clients on 127.0.0.1 posting a "
               f"{result['request_bytes'] / 1024:.1f} KB PNG of one digit drawn on the page's "
               "560x280 canvas, back to back; the clients run on the same 2 cores. 'one client': "
               "200 requests one at a time. 2 workers: `--workers 2`, a process per core. "
               "The fast path is the export with the lowest "
               f"single-image latency: {result['fast_path']}."]),
    ]


def section_deploy(bench: Bench) -> dict:
    sizes = bench.sizes
    data = subset(bench.data.mnist5k_official(bench.args.mnist_test), test=sizes.deploy_test)
    model = bench.args.deploy_model
    trained = None
    if model is None:
        progress(f"deploy: training the default cnn for {sizes.deploy_epochs} epochs")
        trainer = digits.Trainer(max_epochs=sizes.deploy_epochs, log_dir=bench.tmp / "deploy",
                                 callbacks=[], enable_checkpointing=False, verbose=False, seed=0)
        keras_model = trainer.build_model("cnn")
        with quiet_stdout():
            trainer.fit(keras_model, subset(data, train=sizes.accuracy_train))
        model = bench.tmp / "deploy" / "model.keras"
        keras_model.save(model)
        trained = sizes.deploy_epochs
    result = measure(Path(model), data, bench.tmp / "exports",
                     exports=sizes.deploy_exports, serve_seconds=sizes.deploy_seconds,
                     serve_all=sizes.deploy_serve_all, progress=progress)
    return {**result, "model": str(bench.args.deploy_model or "the default cnn"),
            "trained_epochs": trained}


def deploy_tables(result: dict) -> list[Table]:
    return tables(result)
