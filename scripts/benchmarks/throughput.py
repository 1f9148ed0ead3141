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
                  fused_batch_norm: bool = True) -> dict:
    """Build, compile and warm up a model (one epoch, one prediction pass) on the first
    `images` training images; returns a function that measures one more of each."""

    from digits.data import make_pipeline

    split = data.train.take(images)
    fresh_start()
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
            "jit_compile": bool(model.jit_compile), "images": len(split)}


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
    models = {}
    for name in THROUGHPUT_MODELS:
        images = sizes.throughput_images[name]
        progress(f"throughput: {name}, steps_per_execution 1 vs auto, {images} images")
        contenders = {"1": measure_model(name, images, 1, data),
                      "auto": measure_model(name, images, "auto", data)}
        if name == "cnn":  # the one with BatchNormalization: the fused kernel vs Keras' ops
            contenders["auto_keras_bn"] = measure_model(name, images, "auto", data,
                                                        fused_batch_norm=False)
        samples: dict[str, list] = {k: [] for k in contenders}
        for round_ in range(sizes.repeats):
            for key in list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]:
                samples[key].append(contenders[key]["measure"]())
        models[name] = {
            "images": images,
            **{f"spe_{k}": {**summarise(v), "steps_per_execution": contenders[k]["steps_per_execution"]}
               for k, v in samples.items()},
        }
        models[name]["auto_over_1_train"] = ratio(models[name]["spe_auto"]["train_images_per_second"],
                                                  models[name]["spe_1"]["train_images_per_second"])
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
    return {"models": models, "xla": xla, "threads": threads, "gpu": gpu}


def section_gpu(bench: Bench) -> dict:
    """Mixed precision on vs off for each model, on the first GPU (only where there is one)."""
    import keras

    results = {}
    for name in THROUGHPUT_MODELS:
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
               "GPU train img/s (f32 / mixed)")
    rows = []
    for name, m in result["models"].items():
        for key in ("spe_1", "spe_auto", "spe_auto_keras_bn"):
            if key not in m:
                continue
            s = m[key]
            gpu_text = "no GPU"
            if gpu:
                g = gpu[name]
                gpu_text = (f"{per_second(g['float32']['train_images_per_second'])} / "
                            f"{per_second(g['mixed_float16']['train_images_per_second'])}")
            setting = f"{s['steps_per_execution']}" + {"spe_1": "", "spe_auto": " (auto)",
                                                      "spe_auto_keras_bn": " (auto), Keras' own "
                                                      "BatchNormalization ops"}[key]
            rows.append((name, setting,
                         per_second(s["train_images_per_second"]),
                         per_second(s["inference_images_per_second"]),
                         f"{s['train_cpu_ms_per_image']:.2f}", gpu_text))
        rows.append((name, "auto / 1", times(m["auto_over_1_train"]), "", "", ""))
        if "fused_over_keras_bn_train" in m:
            rows.append((name, "fused BatchNormalization / Keras' own",
                         times(m["fused_over_keras_bn_train"]), "", "", ""))
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
               "warm-up."]),
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
