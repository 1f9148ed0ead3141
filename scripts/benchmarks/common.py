"""What every section shares: sizes, tables, timing helpers, data, compiling, subprocess workers."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from digits.engine.loop import BOOKKEEPING

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # `scripts.photos`, the photo-like images of the predict section
BENCH_SCRIPT = ROOT / "scripts" / "bench.py"  # the runner: workers are subprocesses of it


OFFICIAL_MNIST = ROOT / "digits" / "datasets" / "mnist-test"  # the `mnist-test` spec


RESULT_MARK = "BENCH-RESULT "


TRAINER_LABEL = BOOKKEEPING  # the Trainer's own per-epoch bookkeeping: state, metrics.json


THROUGHPUT_MODELS = ("seed-cnn", "cnn", "mlp")


# The Trainer's hooks that run every epoch; every other hook runs once per fit or per test.
EPOCH_HOOKS = frozenset({
    "on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
    "on_test_batch_begin", "on_test_batch_end", "on_evaluate_begin", "on_evaluate_end",
})



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
    peak_matmul_size: int = 4096
    peer_repeats: int = 3  # peer: alternating fresh-process fits of digits and Lightning
    peer_epochs: int | None = None  # None: `epochs`
    peer_dataset: str = "mnist-5k"  # a dataset spec; the whole training split unless --quick
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
    # search: short trials for the memory curve; one search run both ways, alternating
    search_trials: int = 50
    search_pair_trials: int = 6
    search_pair_epochs: int = 2
    search_rounds: int = 1
    search_prune_trials: int = 10
    search_prune_epochs: int = 4

    @classmethod
    def quick(cls) -> Sizes:
        return cls(epochs=1, repeats=1, overhead_repeats=1, c_repeats=1, warm_up=False,
                   overhead_train=128,
                   throughput_images={"cnn": 128},  # the default model alone
                   thread_images=128, xla_images=128, thread_configs=False, xla_model="mlp",
                   peak_matmul_size=512, peer_repeats=1,
                   startup_repeats=1, scale_sizes=(1_000,), accuracy_epochs=1,
                   accuracy_train=128, accuracy_test=500, fashion_epochs=1, fashion_train=1_000,
                   predict_images=20, predict_repeats=2, deploy_epochs=1,
                   deploy_exports=(("litert", "int8"),), deploy_seconds=0.5, deploy_test=500,
                   deploy_serve_all=False, search_trials=6, search_pair_trials=2,
                   search_pair_epochs=1, search_rounds=1, search_prune_trials=4,
                   search_prune_epochs=2)


@dataclasses.dataclass
class Table:
    """One result table: rendered with rich on the terminal and as markdown for BENCHMARKS.md."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    notes: list[str] = dataclasses.field(default_factory=list)


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
    from digits.engine.config import TrainerSettings

    config = TrainerSettings()
    return {"batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "eval_batch_size": config.eval_batch_size,
            "label_smoothing": config.label_smoothing}


def build_like_trainer(name: str, **hyperparameters):
    """`digits.build_model(name)` under the dtype policy a default Trainer resolves to on this
    machine ("auto": mixed_bfloat16 on a CPU with native bfloat16), as `Trainer.build_model`
    builds it."""
    import digits
    from digits.engine.config import TrainerSettings
    from digits.speed.precision import dtype_policy, resolve_precision

    with dtype_policy(resolve_precision(TrainerSettings().precision)):
        return digits.build_model(name, **hyperparameters)


def compile_like_trainer(model, train_images: int, epochs: int, steps_per_execution="auto",
                         jit_compile: bool = False, confusion_metric: bool = True,
                         fused_batch_norm: bool = True):
    """Compile exactly as `Trainer` compiles an uncompiled model with its defaults
    (`digits.engine.compiling.compile_model`); returns the steps_per_execution used.

    XLA cannot compile the confusion-matrix metric (its bincount needs a length known at
    compile time): compare XLA on and off with `confusion_metric=False`.
    """
    from digits.engine.compiling import compile_model
    from digits.engine.config import TrainerSettings

    config = TrainerSettings(max_epochs=epochs, steps_per_execution=steps_per_execution,
                           fused_batch_norm=fused_batch_norm)
    return compile_model(model, config, config.train_steps(train_images),
                         confusion_matrix=confusion_metric, jit_compile=jit_compile)


class HookTimes:
    """Seconds spent inside each callback's hooks, by stage ("fit" or "test") and hook, and in
    the background work each hands off (stage "background").

    The hooks are timed by the Trainer's own dispatcher (`digits.engine.dispatch.HookTimer`, what the
    profiler callback prints); the background work by wrapping the Trainer's hand-off.
    """

    def __init__(self) -> None:
        from digits.engine.dispatch import HookTimer

        self.timer = HookTimer()
        self.background: dict[tuple[str, str, str], float] = collections.defaultdict(float)

    @property
    def seconds(self) -> dict[tuple[str, str, str], float]:
        return {**self.timer.seconds, **self.background}

    def wrap_background(self, trainer) -> None:
        """Time the work the Trainer runs off the training thread, by whose work it is."""
        submit, for_callback = trainer.state.writes.submit, trainer.run_in_background
        inside = []

        def timed_task(task, label: str, hook: str):
            def run():
                start = time.perf_counter()
                try:
                    task()
                finally:
                    self.background[(label, "background", hook)] += time.perf_counter() - start
            return run

        def own(task):
            submit(task if inside else timed_task(task, TRAINER_LABEL, "background"))

        def callbacks(task, callback=None, hook="on_epoch_end"):
            inside.append(1)
            try:
                for_callback(timed_task(task, callback_label(callback), hook), callback, hook)
            finally:
                inside.pop()

        trainer.state.writes.submit, trainer.run_in_background = own, callbacks


def callback_label(callback) -> str:
    from digits.callbacks.registry import label_of

    return label_of(callback)


def run_worker(kind: str, args: dict, env: dict | None = None, timeout: float = 900) -> dict:
    """Run this script as a worker subprocess and return the JSON it reports."""
    command = [sys.executable, str(BENCH_SCRIPT), "--worker", kind, json.dumps(args)]
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


def summarise(samples: list[dict]) -> dict:
    keys = samples[0].keys() if samples else ()
    return {k: median(s[k] for s in samples) for k in keys}


def script_module(name: str):
    """A module of scripts/ (which is kept off sys.path, see the top of scripts/bench.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"digits_bench_{name}",
                                                  BENCH_SCRIPT.with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Bench:
    """What the sections share: options, sizes, data, a scratch directory, the machine."""

    def __init__(self, args, sizes: Sizes, tmp: Path) -> None:
        self.args = args
        self.sizes = sizes
        self.tmp = tmp
        self.data = Data()
        self.machine: dict = {}
        self.callback_timings: dict | None = None
