#!/usr/bin/env python
"""Benchmarks: what the Trainer and its callbacks cost, how fast models train, start and scale.

One command measures everything side by side: contenders alternate (A B, then B A, ...) after
a warm-up, and the tables show medians and ratios, never a lone absolute time. The machine this
runs on is often shared, so only times taken next to each other compare. Everything that can
run in this one process does; a setting that must be made before TensorFlow starts (threads,
oneDNN) and anything whose memory or start-up is measured runs in a subprocess.

Usage:
    python scripts/bench.py [--only SECTIONS] [--epochs E] [--repeats R] [--overhead-repeats R]
                            [--c-repeats R] [--quick]
                            [--out bench.json] [--markdown BENCHMARKS.md]
                            [--tune-metrics PATH] [--fashion-epochs N]

Sections (all but `fashion` run by default):
    overhead    A: the notebook's `model.fit` on NumPy arrays; B: `Trainer.fit` with its default
                callbacks; each in a warm process of its own (A with TensorFlow's defaults,
                B after `import digits`); C: the Trainer with no callbacks vs raw Keras `fit`
                on the identical tf.data pipeline, compiled alike. Goals: B/A <= 0.80,
                C <= 1.02.
    callbacks   each default callback's time per epoch as a share of B's epoch, timed inside
                B's own fits, and its cost per `Trainer.test`. Goal: confusion_matrix <= 5%.
    throughput  images/s, training and inference, of seed-cnn, cnn and mlp with
                steps_per_execution 1 vs auto; TensorFlow thread settings and oneDNN (each in
                a subprocess); XLA once; mixed precision on vs off where there is a GPU.
    startup     `python -m digits.train --help` (goal <= 1 s, no TensorFlow import) and the
                time from launch to the end of the first training step.
    scale       one epoch of Fashion-MNIST at 5k, 15k and all 60k images, each in a subprocess:
                images/s, peak RSS (goal <= 3 GB) and how time grows with the images.
    accuracy    official MNIST test accuracy of seed-cnn and cnn trained on the 5,000 embedded
                digits, and of a tuning run's best model (`--tune-metrics`).
    predict     reading your own images: finding the digits in photo-like images (ms/image,
                with and without decoding the file) and `python -m digits.predict` on 1,000
                of them (images/s, and per image beyond its start-up). Reading accuracy per
                kind needs fully trained models: scripts/read_photos.py.
    fashion     only when named: Fashion-MNIST test accuracy of cnn trained on all 60k images.

Example:
    python scripts/bench.py --quick --out /tmp/bench.json
    python scripts/bench.py --out bench.json --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Run as a script, this directory comes first on sys.path, and its tensorboard.py (the launcher)
# would shadow the package that tf.summary imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# What the user set, before digits sets its default: the notebook's process gets exactly this.
ONEDNN_AS_GIVEN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
TENSORFLOW_FIRST = "DIGITS_BENCH_TENSORFLOW_FIRST"
if os.environ.get(TENSORFLOW_FIRST):
    # The notebook's process: TensorFlow starts with its own defaults, as in a notebook that
    # never imported digits before it.
    import tensorflow  # noqa: E402, F401

import digits  # noqa: E402 - before TensorFlow: digits' start-up defaults then apply here too

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_MNIST = ROOT.parent / "shared" / "data" / "mnist"
SECTIONS = ("overhead", "callbacks", "throughput", "startup", "scale", "accuracy", "predict",
            "fashion", "deploy")
DEFAULT_SECTIONS = SECTIONS[:-2]  # fashion and deploy run when named
RESULT_MARK = "BENCH-RESULT "
SIZE_OPTIONS = ("epochs", "repeats", "overhead_repeats", "c_repeats", "accuracy_epochs",
                "fashion_epochs")  # command-line options that override a `Sizes` field
TRAINER_LABEL = "trainer: state + metrics.json"  # the Trainer's own per-epoch bookkeeping
THROUGHPUT_MODELS = ("seed-cnn", "cnn", "mlp")

# The Trainer's hooks that run every epoch; every other hook runs once per fit or per test.
EPOCH_HOOKS = frozenset({
    "on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
    "on_test_batch_begin", "on_test_batch_end", "on_evaluate_begin", "on_evaluate_end",
})
TIMED_HOOKS = (*sorted(EPOCH_HOOKS), "on_train_begin", "on_train_end", "setup", "on_fit_start",
               "on_fit_end", "on_test_end", "on_validation_end", "teardown")


@dataclasses.dataclass
class Sizes:
    """How much each section measures; `--quick` shrinks everything to a smoke test."""

    # Overhead fits of 3 epochs: a 2-epoch fit is half tracing and compiling, and it shows
    # only one epoch change, where Keras' own pipeline stalls (BENCHMARKS.md).
    epochs: int = 3
    repeats: int = 4  # throughput: alternating epochs per contender (8 batches each)
    overhead_repeats: int = 3
    # C's two sides differ by less than the machine's noise: more pairs, each of two 3-epoch
    # fits (A's and B's rounds are the longer ones and keep to overhead_repeats).
    c_repeats: int = 4
    warm_up: bool = True
    overhead_train: int | None = None  # None: the whole training split
    throughput_images: dict = dataclasses.field(
        default_factory=lambda: {"seed-cnn": 1024, "cnn": 1024, "mlp": 4500})
    thread_images: int = 1024
    xla_images: int = 512  # XLA trains the cnn ~9x slower here: 4 batches tell the ratio
    thread_configs: bool = True
    xla_model: str = "cnn"
    startup_repeats: int = 2
    scale_sizes: tuple = (5_000, 15_000, 60_000)
    accuracy_epochs: int = 6
    accuracy_train: int | None = None
    accuracy_test: int | None = None
    fashion_epochs: int = 3
    fashion_train: int | None = None
    # 200 distinct photo-like images, each named 5 times: 1,000 images for the command.
    predict_images: int = 200
    predict_repeats: int = 5
    # deploy: the model exported (trained for this many epochs unless --deploy-model names
    # one), the formats exported (None: all), and how long each server is loaded
    deploy_epochs: int = 4
    deploy_exports: tuple | None = None
    deploy_seconds: float = 10.0
    deploy_test: int | None = None
    deploy_serve_all: bool = True  # False: serve only the fast path, with one worker

    @classmethod
    def quick(cls) -> Sizes:
        return cls(epochs=1, repeats=1, overhead_repeats=1, c_repeats=1, warm_up=False,
                   overhead_train=128,
                   throughput_images={"seed-cnn": 128, "cnn": 128, "mlp": 128},
                   thread_images=128, xla_images=128, thread_configs=False, xla_model="mlp",
                   startup_repeats=1, scale_sizes=(1_000,), accuracy_epochs=1,
                   accuracy_train=128, accuracy_test=500, fashion_epochs=1, fashion_train=1_000,
                   predict_images=20, predict_repeats=2, deploy_epochs=1,
                   deploy_exports=(("litert", "int8"),), deploy_seconds=0.5, deploy_test=500,
                   deploy_serve_all=False)


@dataclasses.dataclass
class Table:
    """One result table: rendered with rich on the terminal and as markdown for BENCHMARKS.md."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    notes: list[str] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------- small helpers


def fresh_start() -> None:
    """Forget earlier models (Keras' global state, garbage) so every run starts alike."""
    import gc

    import keras

    policy = keras.mixed_precision.dtype_policy()  # clear_session would reset it
    keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy(policy)
    gc.collect()
    keras.utils.set_random_seed(0)


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system), every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes() -> int:
    """The largest resident set this process has had (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def seconds(value: float | None, places: int = 2) -> str:
    return "-" if value is None else f"{value:.{places}f} s"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def per_second(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def gigabytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024**3:.2f} GB"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stdout():
    """Send stdout to /dev/null: the rich callbacks then write plain lines, and nobody draws."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def machine_info() -> dict:
    """Cores, CPU model, memory and library versions, for the record next to every figure."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    import keras
    import tensorflow as tf

    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_bytes": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def make_epoch_clock(epoch_variable=None):
    """A Keras callback noting when each epoch begins and training ends (perf_counter).

    Every contender gets one, so they stay comparable. When `epoch_variable` is given it is set
    to the epoch at its start, as the Trainer does for its pipeline's shuffling.
    """
    import keras

    class EpochClock(keras.callbacks.Callback):
        order = -100  # first among the Trainer's callbacks: its epoch starts before theirs

        def __init__(self) -> None:
            super().__init__()
            self.epoch_starts: list[float] = []
            self.training_ends: list[float] = []
            self.began: float | None = None
            self.ended: float | None = None

        def on_train_begin(self, logs=None):
            self.began = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            if epoch_variable is not None:
                epoch_variable.assign(epoch)
            self.epoch_starts.append(time.perf_counter())

        def on_test_begin(self, logs=None):
            if len(self.training_ends) < len(self.epoch_starts):
                self.training_ends.append(time.perf_counter())

        def on_train_end(self, logs=None):
            self.ended = time.perf_counter()

        def epoch_seconds(self) -> list[float]:
            marks = [*self.epoch_starts, self.ended or time.perf_counter()]
            return [b - a for a, b in zip(marks, marks[1:], strict=False)]

        def training_seconds(self) -> list[float]:
            return [b - a for a, b in zip(self.epoch_starts, self.training_ends, strict=False)]

    return EpochClock()


def steady_epoch(epochs: list[float]) -> float | None:
    """The epochs after the first (which traces the graphs), or the only one."""
    return median(epochs[1:] or epochs)


# ----------------------------------------------------------------------------- data


class Data:
    """The datasets the sections share, each loaded once."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def mnist5k(self):
        if "mnist5k" not in self._cache:
            from digits.data import load_dataset

            self._cache["mnist5k"] = load_dataset("mnist-5k", announce=False)
        return self._cache["mnist5k"]

    def mnist5k_official(self, test_dir: Path):
        if "official" not in self._cache:
            from digits.data import load_dataset

            self._cache["official"] = load_dataset("mnist-5k", test_dataset=str(test_dir),
                                                   announce=False)
        return self._cache["official"]


def subset(data, train: int | None = None, val: int | None = None, test: int | None = None):
    """The first `train`/`val`/`test` examples of each split (None keeps a split whole)."""
    from digits.data import Dataset

    def cut(split, n):
        return split if split is None or n is None else split.take(n)

    return Dataset(cut(data.train, train), cut(data.val, val), cut(data.test, test), data.name,
                   data.description, data.class_names)


def trainer_defaults() -> dict:
    """The Trainer's default batch size, learning rate and evaluation batch size."""

    trainer = digits.Trainer(verbose=False)
    return {"batch_size": trainer.batch_size, "learning_rate": trainer.learning_rate,
            "eval_batch_size": trainer.eval_batch_size,
            "label_smoothing": trainer.label_smoothing}


def compile_like_trainer(model, train_images: int, epochs: int, steps_per_execution="auto",
                         jit_compile: bool = False, confusion_metric: bool = True,
                         fused_batch_norm: bool = True):
    """Compile as `Trainer` compiles an uncompiled model: fused batch normalization, Adam with
    cosine decay, label-smoothed sparse cross-entropy, accuracy and the streaming confusion
    matrix. Returns the steps_per_execution used ("auto" is the Trainer's rule: 32, or fewer
    batches if the epoch has fewer).

    XLA cannot compile the confusion-matrix metric (its bincount needs a length known at
    compile time): compare XLA on and off with `confusion_metric=False`.
    """
    import keras

    from digits.fusion import fuse_batch_norm
    from digits.metrics import SmoothedSparseCrossentropy, compiled_metrics

    if fused_batch_norm:  # as the Trainer does by default
        fuse_batch_norm(model)
    defaults = trainer_defaults()
    steps = -(-train_images // defaults["batch_size"])
    spe = min(32, steps) if steps_per_execution == "auto" else int(steps_per_execution)
    schedule = keras.optimizers.schedules.CosineDecay(defaults["learning_rate"],
                                                      max(1, steps * epochs), alpha=0.01)
    metrics = compiled_metrics(model.output_shape[-1], confusion_matrix=confusion_metric)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule),
                  loss=SmoothedSparseCrossentropy(defaults["label_smoothing"]), metrics=metrics,
                  steps_per_execution=spe, jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)  # as the Trainer does: one trace, not two
    return spe


# ----------------------------------------------------------------------------- overhead


class HookTimes:
    """Seconds spent inside each callback's hooks, by phase ("fit" or "test") and hook.

    The timers wrap the hook methods of the callback instances, so the Trainer dispatches to
    them exactly as it would to the callbacks themselves.
    """

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str, str], float] = collections.defaultdict(float)
        self.phase = "fit"

    def wrap(self, owner, label: str, names) -> None:
        for name in names:
            method = getattr(owner, name, None)
            if callable(method):
                setattr(owner, name, self._timed(method, label, name))

    def wrap_background(self, trainer) -> None:
        """Time the work the Trainer runs off the training thread, by whose work it is."""
        submit, for_callback = trainer._in_background, trainer.run_in_background
        inside = []

        def timed_task(task, label: str, hook: str):
            def run():
                start = time.perf_counter()
                try:
                    task()
                finally:
                    self.seconds[(label, "background", hook)] += time.perf_counter() - start
            return run

        def own(task):
            submit(task if inside else timed_task(task, TRAINER_LABEL, "background"))

        def callbacks(task, callback=None, hook="on_epoch_end"):
            inside.append(1)
            try:
                for_callback(timed_task(task, callback_label(callback), hook), callback, hook)
            finally:
                inside.pop()

        trainer._in_background, trainer.run_in_background = own, callbacks

    def _timed(self, method, label: str, hook: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[(label, self.phase, hook)] += time.perf_counter() - start

        return timed


def callback_label(callback) -> str:
    return getattr(callback, "name", "") or type(callback).__name__


def run_notebook(data, epochs: int) -> dict:
    """A: the notebook's way. Its default `verbose` draws a Keras progress bar, to /dev/null."""


    fresh_start()
    model = digits.build_model("cnn")
    clock = make_epoch_clock()
    with quiet_stdout():
        start, cpu = time.perf_counter(), cpu_seconds()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(data.train.x, data.train.y, batch_size=128, epochs=epochs,
                  validation_data=(data.val.x, data.val.y), callbacks=[clock])
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"seconds": wall, "cpu_seconds": cpu, "epoch_seconds": clock.epoch_seconds()}


class ContenderProcess:
    """One contender's fits in a process of its own, warm, one fit per request.

    "notebook" (A): TensorFlow starts with its own defaults (TF_ENABLE_ONEDNN_OPTS as the user
    gave it, TensorFlow imported before digits), as in a notebook. "trainer" (B): `import digits`
    first, as `python -m digits.train` starts. Each side then pays for its own process alone,
    and neither inherits this one's history.
    """

    def __init__(self, kind: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        if ONEDNN_AS_GIVEN is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = ONEDNN_AS_GIVEN
        if kind == "notebook":
            env[TENSORFLOW_FIRST] = "1"
        self.kind = kind
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True,
            env=env, cwd=ROOT)

    def fit(self, epochs: int, train: int | None, val: int | None, test: bool = False) -> dict:
        self.send(epochs, train, val, test)
        return self.receive()

    def send(self, epochs: int, train: int | None, val: int | None, test: bool = False) -> None:
        """Ask for one fit; `receive` waits for its result (so two processes can warm up at once)."""
        request = {"epochs": epochs, "train": train, "val": val, "test": test}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(RESULT_MARK):
                return json.loads(line[len(RESULT_MARK):])
        self.errors.seek(0)
        raise RuntimeError(f"the {self.kind} process ended (exit {self.proc.wait()}):\n"
                           f"{self.errors.read()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        self.errors.close()


def serve(kind: str) -> int:
    """A contender process's loop: one JSON request a line in, one fit's result a line out.

    The Trainer's fits time their callbacks' hooks (a clock read around each call) and return
    the seconds as `hooks`: [label, phase, hook, seconds] rows.
    """
    data = Data().mnist5k()
    with tempfile.TemporaryDirectory(prefix="digits-bench-trainer-") as log_dir:
        for line in sys.stdin:
            request = json.loads(line)
            chosen = subset(data, request["train"], request["val"])
            if kind == "notebook":
                result = run_notebook(chosen, request["epochs"])
            else:
                hooks = HookTimes()
                result = run_trainer(chosen, request["epochs"], Path(log_dir), True, hooks,
                                     test=request.get("test", False))
                result["hooks"] = [[*key, value] for key, value in hooks.seconds.items()]
            result["tf_enable_onednn_opts"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
            print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def run_trainer(data, epochs: int, log_dir: Path, default_callbacks: bool,
                hooks: HookTimes | None = None, test: bool = False) -> dict:
    """B (`default_callbacks=True`) or the Trainer half of C (no callbacks, no checkpoint)."""

    from callbacks.registry import default_callbacks as defaults

    fresh_start()
    model = digits.build_model("cnn")
    clock = make_epoch_clock()
    chosen = defaults() if default_callbacks else []
    if hooks is not None:
        for callback in chosen:
            hooks.wrap(callback, callback_label(callback), TIMED_HOOKS)
    with quiet_stdout():
        start, cpu = time.perf_counter(), cpu_seconds()
        trainer = digits.Trainer(max_epochs=epochs, log_dir=log_dir, callbacks=[*chosen, clock],
                                 enable_checkpointing=default_callbacks, verbose=False)
        if hooks is not None:
            # The Trainer's own per-epoch bookkeeping: the resumable state and metrics.json.
            hooks.wrap(trainer, TRAINER_LABEL, ("_save_state", "_write_metrics"))
            hooks.wrap_background(trainer)
            hooks.phase = "fit"
        trainer.fit(model, data)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        result = {"seconds": wall, "cpu_seconds": cpu, "epoch_seconds": clock.epoch_seconds(),
                  "steps_per_execution": int(model.steps_per_execution)}
        if test:
            if hooks is not None:
                hooks.phase = "test"
            start = time.perf_counter()
            trainer.test(model, data)
            result["test_seconds"] = time.perf_counter() - start
    return result


def run_keras(data, epochs: int) -> dict:
    """The Keras half of C: `model.fit` on the Trainer's own pipeline, compiled as it compiles."""
    import tensorflow as tf

    from digits.data import make_pipeline

    defaults = trainer_defaults()
    fresh_start()
    model = digits.build_model("cnn")
    start, cpu = time.perf_counter(), cpu_seconds()
    spe = compile_like_trainer(model, len(data.train), epochs)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    steps = -(-len(data.train) // defaults["batch_size"])
    train = make_pipeline(data.train, defaults["batch_size"], shuffle=True, seed=0, epoch=epoch,
                          limit_batches=steps)
    val = make_pipeline(data.val, defaults["eval_batch_size"])
    clock = make_epoch_clock(epoch)
    model.fit(train, validation_data=val, epochs=epochs, callbacks=[clock], shuffle=False,
              verbose=0)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"seconds": wall, "cpu_seconds": cpu, "epoch_seconds": clock.epoch_seconds(),
            "steps_per_execution": spe}


def section_overhead(bench: Bench) -> dict:
    sizes = bench.sizes
    n_train = sizes.overhead_train
    n_val = n_train and max(64, n_train // 9)
    data = subset(bench.data.mnist5k(), train=n_train, val=n_val)
    epochs, log_dir = sizes.epochs, bench.tmp / "overhead"
    notebook, trainer = ContenderProcess("notebook"), ContenderProcess("trainer")
    try:
        contenders = {
            "A": lambda: notebook.fit(epochs, n_train, n_val),
            "B": lambda: trainer.fit(epochs, n_train, n_val),
            "C_keras": lambda: run_keras(data, epochs),
            "C_trainer": lambda: run_trainer(data, epochs, log_dir, False),
        }
        if sizes.warm_up:
            progress("overhead: warm-up (one epoch of each contender on 256 images, all at once:"
                     " nothing is timed)")
            warm = subset(data, train=256, val=128, test=128)
            notebook.send(1, 256, 128)
            trainer.send(1, 256, 128, test=True)
            run_keras(warm, 1)
            run_trainer(warm, 1, log_dir, False)
            notebook.receive()
            trainer.receive()

        runs: dict[str, list[dict]] = {name: [] for name in contenders}
        rounds = max(sizes.overhead_repeats, sizes.c_repeats)
        test_run = None
        for round_ in range(rounds):
            # One order, then the reverse: a drift in the machine's load hits both sides.
            order = [name for name in contenders
                     if round_ < (sizes.c_repeats if name.startswith("C") else
                                  sizes.overhead_repeats)]
            for name in order if round_ % 2 == 0 else order[::-1]:
                if name == "B" and round_ == sizes.overhead_repeats - 1:
                    # B's last fit then tests too (timed apart from the fit): each callback's
                    # cost per test.
                    runs[name].append(trainer.fit(epochs, n_train, n_val, test=True))
                    test_run = runs[name][-1]
                else:
                    runs[name].append(contenders[name]())
                progress(f"overhead: round {round_ + 1}/{rounds} {name:10s} "
                         f"{runs[name][-1]['seconds']:6.1f} s  (load {load_average()[:1]})")
    finally:
        notebook.close()
        trainer.close()
    fit_hook_seconds: dict = collections.defaultdict(float)
    for run in runs["B"]:
        for label, phase, hook, value in run["hooks"]:
            if phase != "test":
                fit_hook_seconds[(label, phase, hook)] += value
    test_hook_seconds = {(label, phase, hook): value
                         for label, phase, hook, value in test_run["hooks"] if phase == "test"}

    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "seconds": median(r["seconds"] for r in results),
            "cpu_seconds": median(r["cpu_seconds"] for r in results),
            "steady_epoch_seconds": median(steady_epoch(r["epoch_seconds"]) for r in results),
            "runs": results,
        }

    def ratios(top: str, bottom: str) -> dict:
        pairs = [t["seconds"] / b["seconds"] for t, b in zip(runs[top], runs[bottom], strict=True)]
        return {"of_medians": ratio(summary[top]["seconds"], summary[bottom]["seconds"]),
                "median_of_pairs": median(pairs),
                "cpu": ratio(summary[top]["cpu_seconds"], summary[bottom]["cpu_seconds"]),
                "steady_epoch": ratio(summary[top]["steady_epoch_seconds"],
                                      summary[bottom]["steady_epoch_seconds"])}

    result = {
        "epochs": epochs,
        "train_images": len(data.train),
        "val_images": len(data.val),
        "repeats": sizes.overhead_repeats,
        "c_repeats": sizes.c_repeats,
        "notebook_tf_enable_onednn_opts": runs["A"][0].get("tf_enable_onednn_opts"),
        "trainer_tf_enable_onednn_opts": runs["B"][0].get("tf_enable_onednn_opts"),
        "this_process_tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "contenders": summary,
        "ratios": {"B/A": ratios("B", "A"), "C": ratios("C_trainer", "C_keras")},
        "identical_steps_per_execution": {r["steps_per_execution"] for r in runs["C_keras"]}
        == {r["steps_per_execution"] for r in runs["C_trainer"]},
    }
    bench.callback_timings = {
        "fit": dict(fit_hook_seconds), "test": test_hook_seconds,
        "fit_runs": sizes.overhead_repeats, "epochs": epochs,
        "epoch_seconds": summary["B"]["steady_epoch_seconds"],
        "test_seconds": test_run.get("test_seconds"), "data": data,
    }
    return result


def overhead_tables(result: dict) -> list[Table]:
    c = result["contenders"]

    def settings(side: str) -> str:
        return f"TF_ENABLE_ONEDNN_OPTS={result.get(side + '_tf_enable_onednn_opts') or 'unset'}"

    what = {
        "A": "notebook: `model.fit(x, y, batch_size=128, validation_data=(x_val, y_val))` on "
             f"NumPy, in a process of its own with TensorFlow's defaults ({settings('notebook')})",
        "B": "`Trainer(max_epochs=E).fit(model, data)` with its default callbacks, in a process "
             f"of its own that imported digits first ({settings('trainer')}); its callbacks' "
             "hooks are timed there",
        "C_keras": "raw Keras `fit` on the Trainer's tf.data pipeline, compiled as the Trainer "
                   "compiles, same steps_per_execution",
        "C_trainer": "`Trainer(callbacks=[], enable_checkpointing=False).fit(model, data)`",
    }
    rows = [(name, what[name], seconds(c[name]["seconds"], 1), seconds(c[name]["cpu_seconds"], 1),
             seconds(c[name]["steady_epoch_seconds"], 2)) for name in c]
    labels = {
        "B/A": ("B/A", "default callbacks vs the notebook as a notebook runs it", "<= 0.80"),
        "C": ("C", "Trainer without callbacks vs raw Keras on the same pipeline", "<= 1.02"),
    }
    ratio_rows = []
    for key, (name, text, goal) in labels.items():
        r = result["ratios"][key]
        ratio_rows.append((name, text, times(r["median_of_pairs"]), times(r["of_medians"]),
                           times(r["cpu"]), times(r["steady_epoch"]), goal))
    note = (f"cnn on mnist-5k ({result['train_images']:,} train / {result['val_images']:,} "
            f"validation images), {result['epochs']} epochs a fit, a fresh model each time, "
            f"{result['repeats']} alternating rounds after a warm-up (C: "
            f"{result.get('c_repeats', result['repeats'])}). A fit's time includes "
            "compiling and tracing; 'epoch' is the median epoch after the first. Rich output "
            "goes to /dev/null (plain lines): the callbacks' work is all done, nothing is drawn "
            "on a terminal.")
    return [
        Table("Overhead: one fit, median of the rounds", ("", "contender", "fit", "CPU", "epoch"),
              rows, [note]),
        Table("Overhead ratios", ("ratio", "what", "median of pairs (goal)", "of medians",
                                  "CPU", "epoch", "goal"), ratio_rows,
              ["'median of pairs': the median of each round's ratio, the two fits of a round "
               "having run back to back; the goals are judged on it. 'of medians': the median "
               "fit of one side over the other's, which can pair a slow round with a fast one. "
               "'CPU' and 'epoch' are ratios of medians."]),
    ]


# ----------------------------------------------------------------------------- callbacks


def streaming_metric_seconds(updates: int, batch: int) -> float:
    """Seconds the compiled-in confusion-matrix metric adds to `updates` batches, in-graph."""
    import numpy as np
    import tensorflow as tf

    from digits.metrics import StreamingConfusionMatrix

    metric = StreamingConfusionMatrix(10)
    rng = np.random.default_rng(0)
    y = tf.constant(rng.integers(0, 10, batch))
    p = tf.constant(rng.random((batch, 10), dtype=np.float32))

    @tf.function
    def run(n):
        for _ in tf.range(n):
            metric.update_state(y, p)
        return metric.counts

    run(tf.constant(1))
    start = time.perf_counter()
    run(tf.constant(updates))
    return time.perf_counter() - start


def section_callbacks(bench: Bench) -> dict:
    timings = bench.callback_timings
    if timings is None:
        progress("callbacks: timing the default callbacks inside two Trainer fits")
        hooks = HookTimes()
        data = subset(bench.data.mnist5k(), train=bench.sizes.overhead_train,
                      val=bench.sizes.overhead_train and max(64, bench.sizes.overhead_train // 9))
        log_dir = bench.tmp / "callbacks"
        if bench.sizes.warm_up:
            run_trainer(subset(data, 256, 128, 128), 1, log_dir, True, test=True)
        runs = [run_trainer(data, bench.sizes.epochs, log_dir, True, hooks, test=(i == 1))
                for i in range(2)]
        test_seconds = {k: v for k, v in hooks.seconds.items() if k[1] == "test"}
        timings = {"fit": {k: v for k, v in hooks.seconds.items() if k[1] != "test"},
                   "test": test_seconds, "fit_runs": 2, "epochs": bench.sizes.epochs,
                   "epoch_seconds": median(steady_epoch(r["epoch_seconds"]) for r in runs),
                   "test_seconds": runs[1].get("test_seconds"), "data": data,
                   "steps_per_execution": runs[0]["steps_per_execution"]}
    fits, epochs = timings["fit_runs"], timings["epochs"]
    epoch_seconds = timings["epoch_seconds"]
    per: dict[str, dict] = collections.defaultdict(
        lambda: {"epoch": 0.0, "fit": 0.0, "test": 0.0, "background": 0.0})
    for (label, phase, hook), value in timings["fit"].items():
        if phase == "fit":
            per[label]["epoch" if hook in EPOCH_HOOKS or label.startswith("trainer") else "fit"] \
                += value
        elif phase == "background":
            per[label]["background"] += value
    for (label, _, _), value in timings["test"].items():
        per[label]["test"] += value
    data = timings["data"]
    batch = trainer_defaults()["batch_size"]
    updates = -(-len(data.train) // batch) + -(-len(data.val) // max(batch, 512))
    in_graph = streaming_metric_seconds(updates, batch)
    callbacks = {}
    for label, spent in per.items():
        per_epoch = spent["epoch"] / (fits * epochs)
        once = spent["fit"] / fits
        callbacks[label] = {
            "seconds_per_epoch": per_epoch,
            "share_of_epoch": ratio(per_epoch, epoch_seconds),
            "seconds_once_per_fit": once,
            "share_of_fit_spread_over_epochs": ratio(per_epoch + once / epochs, epoch_seconds),
            "seconds_per_test": spent["test"],
            "background_seconds_per_epoch": spent["background"] / (fits * epochs),
        }
    if "confusion_matrix" in callbacks:
        cm = callbacks["confusion_matrix"]
        cm["in_graph_metric_seconds_per_epoch"] = in_graph
        cm["share_with_metric"] = ratio(cm["seconds_per_epoch"] + in_graph, epoch_seconds)
        # Its whole cost, wherever it runs: the hooks, the in-graph metric and the drawing
        # done beside training (which takes CPU from training on a 2-core machine).
        cm["share_all_work"] = ratio(cm["seconds_per_epoch"] + in_graph
                                     + cm["background_seconds_per_epoch"], epoch_seconds)
    total = sum(v["seconds_per_epoch"] for k, v in callbacks.items() if not k.startswith("trainer"))
    return {
        "epoch_seconds": epoch_seconds,
        "epochs_per_fit": epochs,
        "fits": fits,
        "test_seconds": timings["test_seconds"],
        "callbacks": dict(sorted(callbacks.items(), key=lambda kv: -kv[1]["seconds_per_epoch"])),
        "all_callbacks_share_of_epoch": ratio(total, epoch_seconds),
    }


def callback_tables(result: dict) -> list[Table]:
    rows = []
    for label, c in result["callbacks"].items():
        share = c["share_of_epoch"]
        if "share_all_work" in c:
            share_text = (f"{percent(share)} ({percent(c['share_all_work'])} with its metric "
                          "and the drawing beside training)")
        elif "share_with_metric" in c:
            share_text = f"{percent(share)} ({percent(c['share_with_metric'])} with its metric)"
        else:
            share_text = percent(share)
        beside = c.get("background_seconds_per_epoch") or 0.0
        rows.append((label, f"{1000 * c['seconds_per_epoch']:.0f} ms", share_text,
                     f"{1000 * beside:.0f} ms" if beside else "",
                     f"{1000 * c['seconds_once_per_fit']:.0f} ms",
                     f"{1000 * c['seconds_per_test']:.0f} ms"))
    rows.append(("all callbacks", "", percent(result["all_callbacks_share_of_epoch"]), "", "",
                 ""))
    notes = [f"Timed inside B's fits: {result['fits']} fits of {result['epochs_per_fit']} epochs; "
             f"the epoch (its steady epoch) took {seconds(result['epoch_seconds'])}. 'per epoch' "
             "is the epoch and batch hooks; 'once per fit' is setup, fit start/end, train "
             "begin/end and teardown; 'per test' is one `Trainer.test` on the held-out images. "
             "The confusion matrix's metric runs inside the compiled steps; its cost is timed "
             "separately on the same number of batches. 'beside training' is work the Trainer "
             "runs on its background thread while the next epoch trains (writing the state "
             "and metrics.json, drawing the confusion matrix): not on the training thread, so "
             "not in 'share', but its CPU time is shared with training and so in B's "
             "wall-clock time."]
    return [Table("Callbacks: cost per epoch as a share of the epoch",
                  ("callback", "per epoch", "share", "beside training", "once per fit",
                   "per test"), rows, notes)]


# ----------------------------------------------------------------------------- throughput


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


def summarise(samples: list[dict]) -> dict:
    keys = samples[0].keys() if samples else ()
    return {k: median(s[k] for s in samples) for k in keys}


def run_worker(kind: str, args: dict, env: dict | None = None, timeout: float = 900) -> dict:
    """Run this script as a worker subprocess and return the JSON it reports."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(args)]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    for key, value in list(full_env.items()):
        if value is None:
            del full_env[key]
    proc = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"worker {kind} {args} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")


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


# ----------------------------------------------------------------------------- startup


def section_startup(bench: Bench) -> dict:
    command = [sys.executable, "-m", "digits.train", "--help"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(command, capture_output=True, env=env, cwd=ROOT, check=True)  # warm caches
    help_seconds = []
    for _ in range(bench.sizes.startup_repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, env=env, cwd=ROOT, check=True)
        help_seconds.append(time.perf_counter() - start)
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "digits.train", "--help"],
                            capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in traced.stderr.splitlines() if line.startswith("import time:")}
    # One launch (~10 s): the bench stays under 10 minutes.
    progress("startup: launch to the first training step, in a subprocess")
    marks = run_worker("first-step", {"log_dir": str(bench.tmp / "startup"),
                                      "launched": time.time()})
    return {
        "help_seconds": median(help_seconds),
        "help_runs": help_seconds,
        "help_imports_tensorflow": "tensorflow" in imported,
        "help_imports_keras": "keras" in imported,
        "first_step": marks,
    }


def startup_tables(result: dict) -> list[Table]:
    f = result["first_step"]
    rows = [
        ("`python -m digits.train --help`", seconds(result["help_seconds"]), "<= 1 s"),
        ("... imports TensorFlow / Keras",
         f"{'yes' if result['help_imports_tensorflow'] else 'no'} / "
         f"{'yes' if result['help_imports_keras'] else 'no'}", "no"),
        ("launch -> TensorFlow, Keras and digits imported", seconds(f["imported"]), ""),
        ("launch -> data loaded (mnist-5k)", seconds(f["data_loaded"]), ""),
        ("launch -> model built", seconds(f["model_built"]), ""),
        ("launch -> training begins (compiled, run directory, callbacks set up)",
         seconds(f["training_begins"]), ""),
        ("launch -> first training step done (graph traced)", seconds(f["first_step"]), ""),
    ]
    return [Table("Start-up", ("measurement", "median", "goal"), rows,
                  ["`--help`: the median of its runs. The launch marks come from one "
                   "launch, which runs the default Trainer with its default callbacks, as "
                   "`python -m digits.train` does, limited to one batch."])]


# ----------------------------------------------------------------------------- scale


def section_scale(bench: Bench) -> dict:
    runs = []
    for total in bench.sizes.scale_sizes:
        progress(f"scale: one epoch of Fashion-MNIST on {total:,} images, in a subprocess")
        runs.append(run_worker("scale", {"images": total, "log_dir": str(bench.tmp / "scale")},
                               timeout=1800))
    fit = None
    if len(runs) >= 2:
        xs = [r["train_images"] + r["val_images"] for r in runs]
        ys = [r["epoch_seconds"] for r in runs]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
                 / sum((x - mean_x) ** 2 for x in xs))
        intercept = mean_y - slope * mean_x
        deviation = max(abs(y - (intercept + slope * x)) / y for x, y in zip(xs, ys, strict=True))
        fit = {"fixed_seconds": intercept, "ms_per_image": 1000 * slope,
               "max_deviation": deviation,
               "exponent": math.log(ys[-1] / ys[0]) / math.log(xs[-1] / xs[0])}
    return {"runs": runs, "linear_fit": fit,
            "peak_rss_bytes": max((r["peak_rss_bytes"] for r in runs), default=None)}


def scale_tables(result: dict) -> list[Table]:
    rows = [(f"{r['train_images']:,} + {r['val_images']:,}", seconds(r["epoch_seconds"], 1),
             per_second(r["train_images_per_second"]), per_second(r["steady_images_per_second"]),
             gigabytes(r["rss_after_load_bytes"]), gigabytes(r["peak_rss_bytes"]))
            for r in result["runs"]]
    notes = ["One epoch with the default Trainer and callbacks, each size in a fresh process; "
             "'steady' leaves out the first compiled call, which traces the graph. Peak RSS is "
             "the process's ru_maxrss (goal <= 3 GB)."]
    fit = result["linear_fit"]
    if fit:
        notes.append(f"Epoch time = {fit['fixed_seconds']:.1f} s + {fit['ms_per_image']:.2f} ms "
                     f"per image (largest deviation from the line {100 * fit['max_deviation']:.0f}%"
                     f"; log-log slope {fit['exponent']:.2f}, 1 is proportional).")
    return [Table("Scale: Fashion-MNIST, one epoch", ("train + validation images", "epoch",
                  "train img/s", "steady img/s", "RSS after loading", "peak RSS"), rows, notes)]


# ----------------------------------------------------------------------------- accuracy


def train_and_test(name: str, data, epochs: int, log_dir: Path) -> dict:

    trainer = digits.Trainer(max_epochs=epochs, log_dir=log_dir, callbacks=[],
                             enable_checkpointing=False, verbose=False)
    model = trainer.build_model(name)
    start = time.perf_counter()
    with quiet_stdout():
        trainer.fit(model, data)
        result = trainer.test(model, data)
    return {"model": name, "epochs": epochs, "accuracy": result.accuracy, "loss": result.loss,
            "train_images": len(data.train), "test_images": len(result.y_true),
            "seconds": time.perf_counter() - start}


def section_accuracy(bench: Bench) -> dict:
    sizes = bench.sizes
    data = subset(bench.data.mnist5k_official(bench.args.mnist_test), train=sizes.accuracy_train,
                  test=sizes.accuracy_test)
    results = []
    for name in ("seed-cnn", "cnn"):
        progress(f"accuracy: {name}, {sizes.accuracy_epochs} epochs on {len(data.train):,} images")
        results.append(train_and_test(name, data, sizes.accuracy_epochs, bench.tmp / "accuracy"))
    tuned = None
    if bench.args.tune_metrics:
        tuned = read_tune_metrics(Path(bench.args.tune_metrics))
    return {"runs": results, "tuner_best": tuned, "test_dataset": str(bench.args.mnist_test)}


def read_tune_metrics(path: Path) -> dict:
    """The test accuracy (and what was trained) of a finished run's metrics.json."""
    metrics = json.loads(path.read_text())
    test = metrics.get("test") or {}
    config = {}
    config_path = path.with_name("config.json")
    if config_path.is_file():
        config = json.loads(config_path.read_text())
    return {"path": str(path), "accuracy": test.get("accuracy"), "test_images": test.get("examples"),
            "epochs": metrics.get("epochs_completed"), "model": config.get("model"),
            "hyperparameters": config.get("hyperparameters"),
            "train_images": (config.get("data") or {}).get("train")}


def accuracy_tables(result: dict) -> list[Table]:
    rows = [(r["model"], f"{r['train_images']:,} (mnist-5k)", str(r["epochs"]),
             f"{r['test_images']:,}", f"{100 * r['accuracy']:.2f}%", seconds(r["seconds"], 0))
            for r in result["runs"]]
    tuned = result.get("tuner_best")
    if tuned:
        rows.append((f"tuner's best {tuned.get('hyperparameters') or ''}".strip(),
                     f"{tuned['train_images'] or '?'}", str(tuned.get("epochs") or "?"),
                     f"{tuned.get('test_images') or '?'}",
                     "-" if tuned["accuracy"] is None else f"{100 * tuned['accuracy']:.2f}%", ""))
    else:
        rows.append(("tuner's best", "not given: --tune-metrics PATH", "", "", "", ""))
    return [Table("Accuracy on the official MNIST test set", ("model", "trained on", "epochs",
                  "test images", "accuracy", "time"), rows,
                  [f"Test set: {result['test_dataset']}. Trained with the Trainer's defaults, "
                   "no callbacks; the final weights are tested."])]


PREDICT_KINDS = {"photo": 0.4, "number": 0.3, "board": 0.15, "scan": 0.15}  # share of the images


def section_predict(bench: Bench) -> dict:
    from digits import photos
    from digits.images import find_digits, find_digits_in_file, read_image
    from digits.models import build_model

    directory = bench.tmp / "predict"
    directory.mkdir(parents=True, exist_ok=True)
    test = bench.data.mnist5k().test
    count = bench.sizes.predict_images
    progress(f"predict: making {count} photo-like images")
    files = []
    for kind, share in PREDICT_KINDS.items():
        for i in range(max(1, round(count * share))):
            sample = photos.make_sample(kind, test.x, test.y, seed=500 + i)
            files.append((kind, sample.save(directory / f"{kind}-{i:04d}"), sample.image.size))
    # Speed does not depend on what the weights learned: an untrained default cnn reads as fast.
    model_path = directory / "cnn.keras"
    build_model("cnn", seed=0).save(model_path)
    for _, path, _ in files[:5]:
        find_digits_in_file(path)  # warm imports and caches
    with_decoding, pipeline_only, by_kind = [], [], collections.defaultdict(list)
    for kind, path, _ in files:
        start = time.perf_counter()
        find_digits_in_file(path)
        with_decoding.append(time.perf_counter() - start)
        gray, size = read_image(path)
        start = time.perf_counter()
        find_digits(gray, str(path), original_size=size)
        pipeline_only.append(time.perf_counter() - start)
        by_kind[kind].append(pipeline_only[-1])
    paths = [str(path) for _, path, _ in files] * bench.sizes.predict_repeats
    progress(f"predict: python -m digits.predict on {len(paths):,} images, and on one")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "digits.predict", "--model", str(model_path), "--json"]
    start = time.perf_counter()
    subprocess.run([*command, paths[0]], capture_output=True, env=env, cwd=ROOT, check=True)
    one_seconds = time.perf_counter() - start
    start = time.perf_counter()
    many = subprocess.run([*command, *paths], capture_output=True, env=env, cwd=ROOT, check=True)
    many_seconds = time.perf_counter() - start
    read = len(json.loads(many.stdout))
    megapixels = [w * h / 1e6 for _, _, (w, h) in files]
    return {
        "distinct_images": len(files), "command_images": len(paths), "read": read,
        "megapixels_median": median(megapixels), "megapixels_max": max(megapixels),
        "find_ms": 1000 * median(pipeline_only),
        "find_ms_p90": 1000 * sorted(pipeline_only)[int(0.9 * (len(pipeline_only) - 1))],
        "find_with_decoding_ms": 1000 * median(with_decoding),
        "find_ms_by_kind": {k: 1000 * median(v) for k, v in by_kind.items()},
        "command_seconds": many_seconds, "one_image_seconds": one_seconds,
        "images_per_second": len(paths) / many_seconds,
        "marginal_images_per_second": (len(paths) - 1) / max(1e-9, many_seconds - one_seconds),
    }


def predict_tables(result: dict) -> list[Table]:
    kinds = ", ".join(f"{k} {v:.1f} ms" for k, v in result["find_ms_by_kind"].items())
    rows = [
        ("finding the digits (no decoding), median", f"{result['find_ms']:.1f} ms",
         f"p90 {result['find_ms_p90']:.1f} ms; by kind: {kinds}"),
        ("reading the file and finding the digits, median",
         f"{result['find_with_decoding_ms']:.1f} ms", "decoding included (JPEG at reduced scale)"),
        (f"`digits.predict --json` on {result['command_images']:,} images",
         f"{result['images_per_second']:.0f} images/s",
         f"{result['command_seconds']:.1f} s in all, start-up and model load included"),
        ("the same, beyond the command's start-up", f"{result['marginal_images_per_second']:.0f} images/s",
         f"one image alone took {result['one_image_seconds']:.1f} s"),
    ]
    return [Table("Reading your own images", ("what", "speed", "notes"), rows,
                  [f"{result['distinct_images']} distinct photo-like images (photos of paper, "
                   f"numbers, boards, 8x8 scans; {result['megapixels_median']:.2f} megapixels "
                   f"median, {result['megapixels_max']:.2f} largest), each named "
                   f"{result['command_images'] // max(1, result['distinct_images'])} times on "
                   "the command line. Accuracy per kind: scripts/read_photos.py, in "
                   "BENCHMARKS.md's \"Your own digits\"."])]


def script_module(name: str):
    """A module of this directory (which is kept off sys.path, see the top of this file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"digits_bench_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section_deploy(bench: Bench) -> dict:
    bench_deploy = script_module("bench_deploy")
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
    result = bench_deploy.measure(Path(model), data, bench.tmp / "exports",
                                  exports=sizes.deploy_exports, serve_seconds=sizes.deploy_seconds,
                                  serve_all=sizes.deploy_serve_all, progress=progress)
    return {**result, "model": str(bench.args.deploy_model or "the default cnn"),
            "trained_epochs": trained}


def deploy_tables(result: dict) -> list[Table]:
    return script_module("bench_deploy").tables(result, Table)


def section_fashion(bench: Bench) -> dict:
    from digits.data import load_dataset

    data = load_dataset("fashion-mnist", announce=False)
    data = subset(data, train=bench.sizes.fashion_train,
                  val=bench.sizes.fashion_train and bench.sizes.fashion_train // 9,
                  test=bench.sizes.fashion_train)
    epochs = bench.args.fashion_epochs or bench.sizes.fashion_epochs
    progress(f"fashion: cnn, {epochs} epochs on {len(data.train):,} images")
    run = train_and_test("cnn", data, epochs, bench.tmp / "fashion")
    return {**run, "dataset": data.description}


def fashion_tables(result: dict) -> list[Table]:
    return [Table("Fashion-MNIST test accuracy", ("model", "train images", "epochs", "test images",
                                                  "accuracy", "time"),
                  [(result["model"], f"{result['train_images']:,}", str(result["epochs"]),
                    f"{result['test_images']:,}", f"{100 * result['accuracy']:.2f}%",
                    seconds(result["seconds"], 0))], [result["dataset"]])]


# ----------------------------------------------------------------------------- workers


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


def worker_first_step(args: dict) -> dict:
    """Launch -> imports -> data -> model -> first step, as `python -m digits.train` goes."""
    launched = args["launched"]
    import keras

    from callbacks.registry import default_callbacks
    from digits.data import load_dataset

    marks = {"imported": time.time() - launched}

    class FirstStep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks.setdefault("training_begins", time.time() - launched)

        def on_train_batch_end(self, batch, logs=None):
            marks.setdefault("first_step", time.time() - launched)

    chosen = [*default_callbacks(), FirstStep()]
    data = load_dataset("mnist-5k", announce=False)
    marks["data_loaded"] = time.time() - launched
    trainer = digits.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                             log_dir=args["log_dir"], callbacks=chosen, verbose=False)
    model = trainer.build_model("cnn")
    marks["model_built"] = time.time() - launched
    with quiet_stdout():
        trainer.fit(model, data)
    return marks


def worker_scale(args: dict) -> dict:
    """One epoch of the default Trainer on the first `images` of Fashion-MNIST (9:1 split)."""
    import keras

    from callbacks.registry import default_callbacks
    from digits.data import load_dataset

    full = load_dataset("fashion-mnist", announce=False)
    total = args["images"]
    n_train = min(len(full.train), round(total * 0.9))
    n_val = min(len(full.val), total - n_train)
    data = subset(full, train=n_train, val=n_val)
    rss_after_load = peak_rss_bytes()
    clock = make_epoch_clock()
    steps: list[tuple[int, float]] = []

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append((batch + 1, time.perf_counter()))

    trainer = digits.Trainer(max_epochs=1, log_dir=args["log_dir"], verbose=False,
                             callbacks=[*default_callbacks(), clock, StepTimes()])
    model = trainer.build_model("cnn")
    with quiet_stdout():
        trainer.fit(model, data)
    epoch = clock.epoch_seconds()[0]
    training = clock.training_seconds()[0]
    batch = trainer.batch_size
    steady = None
    if len(steps) >= 2:
        (first_batch, first_time) = steps[0]
        train_end = clock.epoch_starts[0] + training
        later = min(len(data.train), steps[-1][0] * batch) - first_batch * batch
        if later > 0 and train_end > first_time:
            steady = later / (train_end - first_time)
    return {"train_images": len(data.train), "val_images": len(data.val),
            "epoch_seconds": epoch, "training_seconds": training,
            "train_images_per_second": len(data.train) / training,
            "steady_images_per_second": steady,
            "rss_after_load_bytes": rss_after_load, "peak_rss_bytes": peak_rss_bytes()}


WORKERS = {"throughput": worker_throughput, "first-step": worker_first_step,
           "scale": worker_scale}


# ----------------------------------------------------------------------------- the run


class Bench:
    """What the sections share: options, sizes, data, a scratch directory, the machine."""

    def __init__(self, args, sizes: Sizes, tmp: Path) -> None:
        self.args = args
        self.sizes = sizes
        self.tmp = tmp
        self.data = Data()
        self.machine: dict = {}
        self.callback_timings: dict | None = None


SECTION_FUNCTIONS = {
    "overhead": (section_overhead, overhead_tables),
    "callbacks": (section_callbacks, callback_tables),
    "throughput": (section_throughput, throughput_tables),
    "startup": (section_startup, startup_tables),
    "scale": (section_scale, scale_tables),
    "accuracy": (section_accuracy, accuracy_tables),
    "predict": (section_predict, predict_tables),
    "fashion": (section_fashion, fashion_tables),
    "deploy": (section_deploy, deploy_tables),
}


def goals(sections: dict) -> list[dict]:
    """Each goal of the issue that this run measured: its value, its limit, and whether met."""
    found = []

    def add(name, value, limit, met):
        if value is not None:
            found.append({"goal": name, "value": value, "limit": limit, "met": bool(met)})

    if "overhead" in sections:
        r = sections["overhead"]["ratios"]
        # Judged on the median of the per-round ratios: each pair ran back to back, so a slow
        # minute of the machine hits both sides; medians of each side come from different
        # rounds ("of medians", shown beside it in the ratio table).
        b_a, c = r["B/A"]["median_of_pairs"], r["C"]["median_of_pairs"]
        add("B/A: Trainer with default callbacks vs the notebook's fit", b_a, "<= 0.80",
            b_a is not None and b_a <= 0.80)
        add("C: Trainer without callbacks vs raw Keras fit", c, "<= 1.02",
            c is not None and c <= 1.02)
    if "callbacks" in sections:
        cm = sections["callbacks"]["callbacks"].get("confusion_matrix")
        if cm:
            share = cm.get("share_all_work", cm.get("share_with_metric", cm["share_of_epoch"]))
            add("confusion_matrix share of an epoch", share, "<= 5%", share <= 0.05)
    if "startup" in sections:
        s = sections["startup"]
        add("digits.train --help seconds", s["help_seconds"], "<= 1 s", s["help_seconds"] <= 1.0)
        add("digits.train --help imports TensorFlow", s["help_imports_tensorflow"], "no",
            not s["help_imports_tensorflow"])
    if "scale" in sections and sections["scale"]["peak_rss_bytes"]:
        rss = sections["scale"]["peak_rss_bytes"]
        add("peak RSS, one Fashion-MNIST epoch (bytes)", rss, "<= 3 GB", rss <= 3 * 1024**3)
    if "predict" in sections:
        ms = sections["predict"]["find_ms"]
        add("finding the digits in a photo (<= 1 megapixel), median ms", ms, "<= 5 ms", ms <= 5)
    if "deploy" in sections:
        d = sections["deploy"]
        fast = d["served"][d["fast_path"]]
        add("serving a drawn digit, fast path, one client, p99 ms", fast["alone"]["p99_ms"],
            "< 20 ms", fast["alone"]["p99_ms"] < 20)
        most = max(r["requests_per_second"] for label, r in d["served"].items()
                   if label.startswith(d["fast_path"]))
        add("serving a drawn digit, fast path, 8 clients, requests/s", most, "> 200", most > 200)
    return found


def goal_table(found: list[dict]) -> Table:
    rows = []
    for g in found:
        value = g["value"]
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif "share" in g["goal"]:
            text = percent(value)
        elif "bytes" in g["goal"]:
            text = gigabytes(value)
        elif "seconds" in g["goal"]:
            text = seconds(value)
        elif g["goal"].endswith(" ms"):
            text = f"{value:.1f} ms"
        elif "requests/s" in g["goal"]:
            text = f"{value:.0f}"
        else:
            text = times(value)
        rows.append((g["goal"], text, g["limit"], "met" if g["met"] else "NOT MET"))
    return Table("Goals", ("goal", "measured", "limit", ""), rows)


def print_tables(tables: list[Table]) -> None:
    from rich.table import Table as RichTable

    from callbacks.console import make_console, table_box

    console = make_console()
    for table in tables:
        rich_table = RichTable(title=table.title, title_justify="left", box=table_box(console))
        for header in table.headers:
            rich_table.add_column(header)
        for row in table.rows:
            rich_table.add_row(*[str(cell) for cell in row])
        console.print(rich_table)
        for note in table.notes:
            console.print(note, style="dim", highlight=False, markup=False)
        console.print()


def markdown_tables(tables: list[Table]) -> str:
    parts = []
    for table in tables:
        lines = [f"### {table.title}", "", "| " + " | ".join(table.headers) + " |",
                 "|" + "|".join(" --- " for _ in table.headers) + "|"]
        for row in table.rows:
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
        for note in table.notes:
            lines += ["", note]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


NOTES_MARKER = "<!-- Everything below this line is kept when scripts/bench.py rewrites the file. -->"


def write_markdown(path: Path, report: dict, tables: list[Table]) -> None:
    """BENCHMARKS.md: the command, the machine and its load, then the tables; notes kept."""
    m = report["machine"]
    kept = ""
    if path.is_file():
        text = path.read_text()
        if NOTES_MARKER in text:
            kept = text[text.index(NOTES_MARKER):]
    load = report["load"]
    head = [
        "# Benchmarks",
        "",
        "Measured by `scripts/bench.py`; every figure below comes from its latest run. "
        "Contenders alternate after a warm-up and the tables show medians and ratios.",
        "",
        "To reproduce:",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| CPU | {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable) |",
        f"| memory | {gigabytes(m['memory_bytes'])} |",
        f"| GPU | {', '.join(m['gpus']) or 'none'} |",
        f"| software | Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
        f"TF_ENABLE_ONEDNN_OPTS={m['tf_enable_onednn_opts']} |",
        f"| load average (1, 5, 15 min) | at the start {load['start']}, at the end {load['end']} |",
        f"| run | {report['started']}, {report['seconds'] / 60:.1f} minutes |",
        "",
    ]
    path.write_text("\n".join(head) + "\n" + markdown_tables(tables) + "\n\n"
                    + (kept or NOTES_MARKER + "\n"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sections: " + ", ".join(SECTIONS) + " (fashion and deploy only when named).")
    parser.add_argument("--only", default=None, metavar="SECTIONS",
                        help="comma-separated sections to run (default: all but fashion)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of each overhead fit (default 3; --quick 1)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="alternating rounds of each throughput comparison (default 4; "
                             "--quick 1)")
    parser.add_argument("--overhead-repeats", type=int, default=None,
                        help="alternating rounds of the overhead fits (default 3; --quick 1)")
    parser.add_argument("--c-repeats", type=int, default=None,
                        help="rounds of C's pairs (default 4; A and B keep --overhead-repeats)")
    parser.add_argument("--accuracy-epochs", type=int, default=None,
                        help="epochs for the accuracy section (default 6)")
    parser.add_argument("--fashion-epochs", type=int, default=None,
                        help="epochs for the fashion section (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that every section runs, measures nothing useful")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="write the results as JSON")
    parser.add_argument("--markdown", default=None, metavar="FILE.md",
                        help="write the tables, machine and command (e.g. BENCHMARKS.md)")
    parser.add_argument("--tune-metrics", default=None, metavar="PATH",
                        help="metrics.json of a tuning run's best model (<project>/best/version_N)")
    parser.add_argument("--deploy-model", type=Path, default=None, metavar="MODEL.keras",
                        help="the model the deploy section exports and serves (default: the "
                             "default cnn, trained for a few epochs)")
    parser.add_argument("--mnist-test", type=Path, default=OFFICIAL_MNIST, metavar="DIR",
                        help=f"the official MNIST test set (default {OFFICIAL_MNIST})")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=("notebook", "trainer"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(DEFAULT_SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in SIZE_OPTIONS:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve)
    if args.worker:
        kind, payload = args.worker
        result = WORKERS[kind](json.loads(payload))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0
    sizes = Sizes.quick() if args.quick else Sizes()
    for name in SIZE_OPTIONS:
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices: every contender builds fresh models
    started = time.perf_counter()
    given = sys.argv[1:] if argv is None else argv
    report = {
        "command": " ".join(["python scripts/bench.py", *map(shlex.quote, given)]),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "sizes": dataclasses.asdict(sizes),
        "sections_run": args.sections,
        "load": {"start": load_average()},
        "sections": {},
    }
    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
        bench = Bench(args, sizes, Path(tmp))
        bench.machine = report["machine"] = machine_info()
        for name in args.sections:
            measure, render = SECTION_FUNCTIONS[name]
            progress(f"{name}: start (load average {load_average()})")
            section_start = time.perf_counter()
            result = measure(bench)
            result["seconds"] = time.perf_counter() - section_start
            result["load_average_after"] = load_average()
            report["sections"][name] = result
            tables += render(result)
            progress(f"{name}: done in {result['seconds']:.0f} s")
    report["load"]["end"] = load_average()
    report["goals"] = goals(report["sections"])
    report["seconds"] = time.perf_counter() - started
    tables.append(goal_table(report["goals"]))
    print_tables(tables)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    if args.markdown:
        write_markdown(Path(args.markdown), report, tables)
    return 0


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
