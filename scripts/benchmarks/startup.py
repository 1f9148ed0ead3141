"""The startup section: `--help` without TensorFlow, and the time to the first training step."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import digits
from benchmarks.common import ROOT, Bench, Table, median, progress, quiet_stdout, run_worker, seconds


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


def worker_first_step(args: dict) -> dict:
    """Launch -> imports -> data -> model -> first step, as `python -m digits.train` goes."""
    launched = args["launched"]
    import keras

    from digits.callbacks.registry import default_callbacks
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
