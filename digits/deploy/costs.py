"""What a model costs to run once deployed: its parameters, and the file size and one-image
latency of its int8 ONNX export (the smallest of `digits.export`'s formats here, read by ONNX
Runtime on one thread). A search with cost objectives measures these for every trial
(`digits.tune --objectives`); `digits.tuner.pareto` keeps the trials no other beats on all.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# How a cost is called on the command line -> its metric in a trial's records (the unit in its name).
COSTS = {"latency": "cost_latency_ms", "size": "cost_size_bytes", "params": "cost_params"}
LATENCY_CALLS = 300


def measure_costs(model, data, names: set[str] | frozenset[str]) -> dict[str, float]:
    """The costs named in `names` (keys of `COSTS`) of `model` (any built Keras model; its
    weights do not change them): {metric: value}. Latency and size export `model` to a
    temporary int8 ONNX file (quantized on `data`'s first training images, as `digits.export`
    quantizes) and time `LATENCY_CALLS` single-image predictions on one thread (the median)."""
    costs: dict[str, float] = {}
    if "params" in names:
        costs[COSTS["params"]] = float(model.count_params())
    if not {"latency", "size"} & set(names):
        return costs
    from digits.deploy.runtimes import load_runtime
    from digits.deploy.writers import latency_ms, write_model
    from digits.speed.precision import float32_copy

    with tempfile.TemporaryDirectory(prefix="digits-costs-") as tmp:
        path = Path(tmp) / "model.onnx"
        write_model(float32_copy(model), "onnx", path, "int8", data)
        if "size" in names:
            costs[COSTS["size"]] = float(path.stat().st_size)
        if "latency" in names:
            runtime = load_runtime(path, threads=1)
            costs[COSTS["latency"]] = latency_ms(runtime, data.val.x[:1].astype("float32"),
                                                 calls=LATENCY_CALLS)
    return costs
