"""The overhead section: A (the notebook's `model.fit`) vs B (`Trainer.fit` with its default
callbacks), each in a warm process of its own, and C (the Trainer without callbacks vs raw Keras)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import digits
from benchmarks import ONEDNN_AS_GIVEN, TENSORFLOW_FIRST
from benchmarks.common import (
    BENCH_SCRIPT,
    RESULT_MARK,
    ROOT,
    Bench,
    Data,
    HookTimes,
    Table,
    build_like_trainer,
    compile_like_trainer,
    cpu_seconds,
    fresh_start,
    load_average,
    make_epoch_clock,
    median,
    progress,
    quiet_stdout,
    ratio,
    seconds,
    steady_epoch,
    subset,
    times,
    trainer_defaults,
)


def run_notebook(data, epochs: int) -> dict:
    """A: the notebook's way. Its default `verbose` draws a Keras progress bar, to /dev/null."""


    fresh_start()
    model = build_like_trainer("cnn")
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
            [sys.executable, str(BENCH_SCRIPT), "--serve", kind],
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

    from digits.callbacks.registry import default_callbacks as defaults

    fresh_start()
    model = build_like_trainer("cnn")
    clock = make_epoch_clock()
    chosen = defaults() if default_callbacks else []
    with quiet_stdout():
        start, cpu = time.perf_counter(), cpu_seconds()
        trainer = digits.Trainer(max_epochs=epochs, log_dir=log_dir, callbacks=[*chosen, clock],
                                 enable_checkpointing=default_callbacks, verbose=False)
        if hooks is not None:
            # Every hook timed by the Trainer's dispatcher (as the profiler callback reads
            # it), its own per-epoch bookkeeping included; the background work by whose it is.
            trainer.hook_timer = hooks.timer
            hooks.wrap_background(trainer)
        trainer.fit(model, data)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        result = {"seconds": wall, "cpu_seconds": cpu, "epoch_seconds": clock.epoch_seconds(),
                  "steps_per_execution": int(model.steps_per_execution)}
        if test:
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
    model = build_like_trainer("cnn")
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

        def last_b() -> dict:
            """B's last fit also tests (timed apart from the fit): each callback's cost per test."""
            return trainer.fit(epochs, n_train, n_val, test=True)

        runs = _alternate(contenders, sizes, last_b)
        test_run = runs["B"][-1]
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

    summary = {name: _summary(results) for name, results in runs.items()}
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
        "ratios": {"B/A": _ratios(runs, summary, "B", "A"),
                   "C": _ratios(runs, summary, "C_trainer", "C_keras")},
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


def _alternate(contenders: dict, sizes, last_b) -> dict[str, list[dict]]:
    """Each contender's runs, in rounds: one order, then the reverse, so that a drift in the
    machine's load hits both sides. C's contenders run `c_repeats` rounds, A and B
    `overhead_repeats`; B's last round is `last_b()`."""
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    rounds = max(sizes.overhead_repeats, sizes.c_repeats)
    for round_ in range(rounds):
        order = [name for name in contenders
                 if round_ < (sizes.c_repeats if name.startswith("C") else sizes.overhead_repeats)]
        for name in order if round_ % 2 == 0 else order[::-1]:
            last = name == "B" and round_ == sizes.overhead_repeats - 1
            runs[name].append(last_b() if last else contenders[name]())
            progress(f"overhead: round {round_ + 1}/{rounds} {name:10s} "
                     f"{runs[name][-1]['seconds']:6.1f} s  (load {load_average()[:1]})")
    return runs


def _summary(results: list[dict]) -> dict:
    return {
        "seconds": median(r["seconds"] for r in results),
        "cpu_seconds": median(r["cpu_seconds"] for r in results),
        "steady_epoch_seconds": median(steady_epoch(r["epoch_seconds"]) for r in results),
        # What the first epoch costs beyond a steady one: tracing, graph optimisation, the
        # first calls of every kernel (issue goal for B: <= 0.5 s).
        "first_epoch_overhead_seconds": median(
            r["epoch_seconds"][0] - steady_epoch(r["epoch_seconds"]) for r in results
            if len(r["epoch_seconds"]) > 1),
        "runs": results,
    }


def _ratios(runs: dict, summary: dict, top: str, bottom: str) -> dict:
    pairs = [t["seconds"] / b["seconds"] for t, b in zip(runs[top], runs[bottom], strict=True)]
    return {"of_medians": ratio(summary[top]["seconds"], summary[bottom]["seconds"]),
            "median_of_pairs": median(pairs),
            "cpu": ratio(summary[top]["cpu_seconds"], summary[bottom]["cpu_seconds"]),
            "steady_epoch": ratio(summary[top]["steady_epoch_seconds"],
                                  summary[bottom]["steady_epoch_seconds"])}


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
             seconds(c[name]["steady_epoch_seconds"], 2),
             seconds(c[name]["first_epoch_overhead_seconds"], 2)
             if c[name].get("first_epoch_overhead_seconds") is not None else "")
            for name in c]
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
        Table("Overhead: one fit, median of the rounds",
              ("", "contender", "fit", "CPU", "epoch", "first epoch minus epoch"), rows, [note]),
        Table("Overhead ratios", ("ratio", "what", "median of pairs (goal)", "of medians",
                                  "CPU", "epoch", "goal"), ratio_rows,
              ["'median of pairs': the median of each round's ratio, the two fits of a round "
               "having run back to back; the goals are judged on it. 'of medians': the median "
               "fit of one side over the other's, which can pair a slow round with a fast one. "
               "'CPU' and 'epoch' are ratios of medians."]),
    ]
