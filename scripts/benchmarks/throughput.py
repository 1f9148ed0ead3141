"""The throughput section: images/s of each model, steps per execution, threads, oneDNN, XLA."""

from __future__ import annotations

import os
import time

import digits
from benchmarks.common import (
    THROUGHPUT_MODELS,
    Bench,
    Data,
    Table,
    compile_like_trainer,
    cpu_seconds,
    fresh_start,
    per_second,
    progress,
    ratio,
    run_worker,
    seconds,
    summarise,
    times,
    trainer_defaults,
)


def measure_model(name: str, images: int, spe, data, jit_compile: bool = False,
                  confusion_metric: bool = True, hyperparameters: dict | None = None,
                  fused_batch_norm: bool = True, precision: str = "float32") -> dict:
    """Build (under the dtype policy `precision`), compile and warm up a model (one epoch, one
    prediction pass) on the first `images` training images; returns a function that measures
    one more of each."""

    from digits.data import make_pipeline
    from digits.speed.precision import dtype_policy

    split = data.train.take(images)
    fresh_start()
    with dtype_policy(precision):
        model = digits.build_model(name, **(hyperparameters or {}))
    used = compile_like_trainer(model, len(split), 1, spe, jit_compile=jit_compile,
                                confusion_metric=confusion_metric,
                                fused_batch_norm=fused_batch_norm)
    defaults = trainer_defaults()
    train = make_pipeline(split, defaults["batch_size"], shuffle=True, seed=0)
    predictor = digits.Trainer(verbose=False)
    start = time.perf_counter()
    model.fit(train, epochs=1, verbose=0, shuffle=False)
    predictor.predict(model, split.x)
    warm_up = time.perf_counter() - start

    def measure() -> dict:
        start, cpu = time.perf_counter(), cpu_seconds()
        model.fit(train, epochs=1, verbose=0, shuffle=False)
        train_seconds, train_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        start = time.perf_counter()
        predictor.predict(model, split.x)
        infer_seconds = time.perf_counter() - start
        return {"train_images_per_second": len(split) / train_seconds,
                "inference_images_per_second": len(split) / infer_seconds,
                "train_cpu_ms_per_image": 1000 * train_cpu / len(split)}

    return {"measure": measure, "steps_per_execution": used, "warm_up_seconds": warm_up,
            "jit_compile": bool(model.jit_compile), "images": len(split),
            "train_gflop_per_image": training_gflop_per_image(model)}


def training_gflop_per_image(model) -> float:
    """GFLOP one training image costs, counted by hand from the layers: a multiply-add is 2
    FLOP; a convolution or dense layer's forward pass, and twice that for its backward pass
    (the gradients of its input and of its weights). Normalisation, activations, pooling and
    the optimizer are left out (they are a few percent)."""
    forward = 0
    from digits.keras_internals import all_layers

    for layer in all_layers(model):
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, height, width, out_channels = layer.output.shape
            kernel = layer.kernel.shape  # (kh, kw, in, out)
            forward += 2 * height * width * kernel[0] * kernel[1] * kernel[2] * out_channels
        elif kind == "Dense":
            forward += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 3 * forward / 1e9


def matmul_peak(dtype: str, n: int = 4096, repeats: int = 5) -> dict:
    """This CPU's matmul speed in TensorFlow: GFLOP/s of an n x n by n x n product in `dtype`
    ("float32" or "bfloat16"), the median of `repeats` after one warm-up: the peak a network's
    training can be held against."""
    import statistics

    import tensorflow as tf

    generator = tf.random.Generator.from_seed(0)
    a = tf.cast(generator.normal((n, n)), dtype)
    b = tf.cast(generator.normal((n, n)), dtype)
    # Summed so that only a number comes back (the sum is n*n additions against n**3).
    product = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b),
                                                             tf.float32)))
    product(a, b).numpy()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        samples.append(time.perf_counter() - start)
    seconds = statistics.median(samples)
    return {"dtype": dtype, "n": n, "seconds": seconds, "gflop_per_second": 2 * n**3 / seconds / 1e9}


PEAK_DTYPES = ("float32", "bfloat16")


def thread_configs(quick: bool) -> list[tuple[str, dict, dict]]:
    """(label, worker args, environment) for each thread/oneDNN setting to compare."""
    if quick:
        return [("TF default threads", {"intra": 0, "inter": 0}, {})]
    cores = os.cpu_count() or 1
    # The workers start as digits starts: with oneDNN on (digits sets TF_ENABLE_ONEDNN_OPTS=1
    # unless the user set it), so the default row is also the oneDNN-on row.
    configs = [("TF default threads, oneDNN on", {"intra": 0, "inter": 0},
                {"TF_ENABLE_ONEDNN_OPTS": "1"})]
    # One intra-op thread per core (single-threaded ops, intra 1, measured 0.62-0.76x of the
    # default on 2 cores in every run); intra = inter = cores is TensorFlow's own default, so
    # only one inter-op thread is timed (TF_NUM_INTEROP_THREADS=1 in whole digits.train fits:
    # no faster, 2026-12-02).
    configs.append((f"intra {cores} / inter 1", {"intra": cores, "inter": 1},
                    {"TF_ENABLE_ONEDNN_OPTS": "1"}))
    configs.append(("oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)", {"intra": 0, "inter": 0},
                    {"TF_ENABLE_ONEDNN_OPTS": "0"}))
    return configs


def section_throughput(bench: Bench) -> dict:
    sizes, data = bench.sizes, bench.data.mnist5k()
    progress("throughput: this CPU's matmul peak, float32 and bfloat16")
    peaks = {dtype: matmul_peak(dtype, n=sizes.peak_matmul_size) for dtype in PEAK_DTYPES}
    models = {}
    for name in [m for m in THROUGHPUT_MODELS if m in sizes.throughput_images]:
        images = sizes.throughput_images[name]
        progress(f"throughput: {name}, steps_per_execution 1 vs auto, {images} images")
        contenders = {"1": measure_model(name, images, 1, data),
                      "auto": measure_model(name, images, "auto", data)}
        if name == "cnn":  # the default: Keras' batch norm ops, and mixed bfloat16
            contenders["auto_keras_bn"] = measure_model(name, images, "auto", data,
                                                        fused_batch_norm=False)
            contenders["auto_bf16"] = measure_model(name, images, "auto", data,
                                                    precision="mixed_bfloat16")
        samples: dict[str, list] = {k: [] for k in contenders}
        for round_ in range(sizes.repeats):
            for key in list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]:
                samples[key].append(contenders[key]["measure"]())
        models[name] = {
            "images": images,
            **{f"spe_{k}": {**summarise(v), "steps_per_execution": contenders[k]["steps_per_execution"]}
               for k, v in samples.items()},
        }
        for key, contender in contenders.items():
            entry = models[name][f"spe_{key}"]
            peak = peaks["bfloat16" if key.endswith("bf16") else "float32"]["gflop_per_second"]
            entry["train_gflop_per_second"] = (entry["train_images_per_second"]
                                               * contender["train_gflop_per_image"])
            entry["share_of_peak"] = entry["train_gflop_per_second"] / peak
        models[name]["auto_over_1_train"] = ratio(models[name]["spe_auto"]["train_images_per_second"],
                                                  models[name]["spe_1"]["train_images_per_second"])
        if "spe_auto_bf16" in models[name]:
            models[name]["bf16_over_float32_train"] = ratio(
                models[name]["spe_auto_bf16"]["train_images_per_second"],
                models[name]["spe_auto"]["train_images_per_second"])
        if "spe_auto_keras_bn" in models[name]:
            models[name]["fused_over_keras_bn_train"] = ratio(
                models[name]["spe_auto"]["train_images_per_second"],
                models[name]["spe_auto_keras_bn"]["train_images_per_second"])

    xla_model = sizes.xla_model
    progress(f"throughput: XLA (jit_compile) on {xla_model}"
             + (" without augmentation, which Keras can compile" if xla_model == "cnn" else ""))
    xla = {"model": xla_model}
    # Both without the streaming confusion-matrix metric, which XLA cannot compile.
    for label, jit in (("off", False), ("on", True)):
        contender = measure_model(xla_model, sizes.xla_images, "auto", data, jit_compile=jit,
                                  confusion_metric=False,
                                  hyperparameters={"augment": 0.0} if xla_model == "cnn" else None)
        xla[label] = {**contender["measure"](), "jit_compile": contender["jit_compile"],
                      "warm_up_seconds": contender["warm_up_seconds"]}

    default_cnn = digits.build_model("cnn")
    default_cnn.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
    xla["default_cnn_compiles_with_xla"] = bool(default_cnn.jit_compile)
    xla["on_over_off_train"] = ratio(xla["on"]["train_images_per_second"],
                                     xla["off"]["train_images_per_second"])

    threads = []
    configs = thread_configs(not sizes.thread_configs)
    for label, args, env in configs:
        progress(f"throughput: cnn in a subprocess, {label}")
        result = run_worker("throughput", {**args, "model": "cnn", "images": sizes.thread_images,
                                           "epochs": 2 if sizes.thread_configs else 1}, env)
        threads.append({"setting": label, **args, "env": env, **result})
    baseline = threads[0]["train_images_per_second"] if threads else None
    for entry in threads:
        entry["vs_default"] = ratio(entry["train_images_per_second"], baseline)

    gpu = section_gpu(bench) if bench.machine["gpus"] else None
    return {"peaks": peaks, "models": models, "xla": xla, "threads": threads, "gpu": gpu}


def section_gpu(bench: Bench) -> dict:
    """Mixed precision on vs off for each model, on the first GPU (only where there is one)."""
    import keras

    results = {}
    for name in [m for m in THROUGHPUT_MODELS if m in bench.sizes.throughput_images]:
        results[name] = {}
        for policy in ("float32", "mixed_float16"):
            progress(f"throughput: GPU, {name}, {policy}")
            keras.mixed_precision.set_dtype_policy(policy)
            try:
                contender = measure_model(name, bench.sizes.throughput_images[name], "auto",
                                          bench.data.mnist5k())
                results[name][policy] = summarise([contender["measure"]()
                                                   for _ in range(max(2, bench.sizes.repeats))])
            finally:
                keras.mixed_precision.set_dtype_policy("float32")
    return results


def throughput_tables(result: dict) -> list[Table]:
    gpu = result.get("gpu")
    headers = ("model", "steps/execution", "train img/s", "inference img/s", "train CPU ms/img",
               "train GFLOP/s (share of matmul peak)", "GPU train img/s (f32 / mixed)")
    rows = []
    for name, m in result["models"].items():
        for key in ("spe_1", "spe_auto", "spe_auto_keras_bn", "spe_auto_bf16"):
            if key not in m:
                continue
            s = m[key]
            gpu_text = "no GPU"
            if gpu:
                g = gpu[name]
                gpu_text = (f"{per_second(g['float32']['train_images_per_second'])} / "
                            f"{per_second(g['mixed_float16']['train_images_per_second'])}")
            setting = f"{s['steps_per_execution']}" + {
                "spe_1": "", "spe_auto": " (auto)",
                "spe_auto_keras_bn": " (auto), Keras' own BatchNormalization ops",
                "spe_auto_bf16": " (auto), mixed_bfloat16"}[key]
            flops = (f"{s['train_gflop_per_second']:.0f} ({100 * s['share_of_peak']:.0f}% of "
                     f"{'bfloat16' if key.endswith('bf16') else 'float32'})"
                     if "share_of_peak" in s else "")
            rows.append((name, setting,
                         per_second(s["train_images_per_second"]),
                         per_second(s["inference_images_per_second"]),
                         f"{s['train_cpu_ms_per_image']:.2f}", flops, gpu_text))
        rows.append((name, "auto / 1", times(m["auto_over_1_train"]), "", "", "", ""))
        if "fused_over_keras_bn_train" in m:
            rows.append((name, "fused BatchNormalization / Keras' own",
                         times(m["fused_over_keras_bn_train"]), "", "", "", ""))
        if "bf16_over_float32_train" in m:
            rows.append((name, "mixed_bfloat16 / float32", times(m["bf16_over_float32_train"]),
                         "", "", "", ""))
    peaks = result.get("peaks") or {}
    peak_text = "; ".join(f"{dtype} {p['gflop_per_second']:.0f} GFLOP/s" for dtype, p in
                          peaks.items())
    size = next(iter(peaks.values()))["n"] if peaks else 0
    xla = result["xla"]
    xla_rows = [
        (f"XLA {label}", per_second(xla[label]["train_images_per_second"]),
         per_second(xla[label]["inference_images_per_second"]),
         seconds(xla[label]["warm_up_seconds"], 1))
        for label in ("off", "on")
    ]
    xla_rows.append(("on / off", times(xla["on_over_off_train"]), "", ""))
    thread_rows = [(t["setting"], per_second(t["train_images_per_second"]),
                    per_second(t["inference_images_per_second"]), times(t["vs_default"]))
                   for t in result["threads"]]
    return [
        Table("Throughput (this process, alternating)", headers, rows,
              ["Training on the Trainer's pipeline, compiled as the Trainer compiles (with fused "
               "batch normalization unless the row says otherwise); inference through "
               "`Trainer.predict` (batches of 512). Medians of alternating epochs after a "
               "warm-up.", "Training GFLOP/s: images/s times a hand count of the convolutions' "
               "and dense layers' FLOP per training image (forward, and twice that backward), "
               f"against this CPU's matmul peak in TensorFlow (a {size}x{size} product, median "
               f"of 5: {peak_text or 'not measured'})."]),
        Table(f"XLA (jit_compile=True), {xla['model']}"
              + (" without augmentation" if xla["model"] == "cnn" else ""), ("", "train img/s",
              "inference img/s", "warm-up (compile)"), xla_rows,
              [f"The default cnn {'can' if xla['default_cnn_compiles_with_xla'] else 'cannot'} be "
               "compiled with XLA: Keras turns jit_compile off for a model with RandomRotation, "
               "so this compares the same CNN without its augmentation layers."]),
        Table("Threads and oneDNN (cnn, each in its own subprocess)",
              ("setting", "train img/s", "inference img/s", "train vs TF default"), thread_rows,
              ["tf.config.threading must be set before TensorFlow starts, and oneDNN is read "
               "when TensorFlow is imported, so each setting runs in a fresh process."]),
    ]


def worker_throughput(args: dict) -> dict:
    import tensorflow as tf

    # Thread pools are fixed when TensorFlow's runtime starts: set them before anything runs.
    if args.get("intra"):
        tf.config.threading.set_intra_op_parallelism_threads(args["intra"])
    if args.get("inter"):
        tf.config.threading.set_inter_op_parallelism_threads(args["inter"])
    data = Data().mnist5k()
    contender = measure_model(args["model"], args["images"], "auto", data)
    return summarise([contender["measure"]() for _ in range(args.get("epochs", 1))])
