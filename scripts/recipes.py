"""Compare training recipes: each variant's `digits.train` over several seeds, side by side.

Every run is the real command in its own process (the default callbacks off, the checkpoint
on: the model tested is the best by validation loss, as `digits.train` tests it; each image
predicted once, `--no-tta`, unless a variant's flags say `--tta`). Each line
of the output file is one run: the variant, seed, validation accuracy and loss of the
checkpointed epoch (what a choice may be made on), test accuracy (what is reported, never
chosen on) and wall time. Runs already in the file are skipped, so the script resumes.

Example:
    python scripts/recipes.py --out /tmp/recipes.jsonl --seeds 0,1,2 \\
        --variant base= --variant ema="--ema 0.99" --variant elastic="--hp elastic=1"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_one(flags: list[str], seed: int, dataset: str, test_dataset: str, log_dir: Path) -> dict:
    command = [sys.executable, "-m", "digits.train", "--dataset", dataset, "--test-dataset",
               test_dataset, "--seed", str(seed), "--no-default-callbacks", "--no-resume",
               "--log-dir", str(log_dir), "--name", "run", "--no-tta", *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    run = sorted((log_dir / "run").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    row_path = {"run": str(run)}
    metrics = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "state" / "trainer.json").read_text())
    best = state["callbacks"]["Checkpoint"]["best_epoch"]
    history = metrics["history"]
    ensembles = sorted((log_dir / "run-ensemble").glob("version_*/metrics.json"))
    if ensembles:  # --ensemble: the averaged model is what the variant produced
        ensemble = json.loads(ensembles[-1].read_text())
        return {"val_accuracy": validation_accuracy(ensembles[-1].parent / "model.keras",
                                                    dataset, test_dataset, seed),
                "val_loss": None, "best_epoch": None,
                "test_accuracy": ensemble["test"]["accuracy"], "seconds": seconds,
                "members_test": [m["test"]["accuracy"] for m in ensemble["members"]],
                "run": str(ensembles[-1].parent)}
    averaged = metrics.get("averaged")
    if averaged and averaged.get("kept"):  # --swa: the checkpoint kept the averaged weights
        return {"val_accuracy": averaged["val_accuracy"], "val_loss": averaged["val_loss"],
                "best_epoch": "swa", "last_epoch_val_loss": history["val_loss"][-1],
                "best_epoch_val_loss": history["val_loss"][best - 1],
                "test_accuracy": metrics["test"]["accuracy"], "seconds": seconds, **row_path}
    return {"val_accuracy": history["val_accuracy"][best - 1],
            "val_loss": history["val_loss"][best - 1], "best_epoch": best,
            **({"averaged_val_loss": averaged["val_loss"],
                "averaged_val_accuracy": averaged["val_accuracy"]} if averaged else {}),
            "test_accuracy": metrics["test"]["accuracy"], "seconds": seconds, **row_path}


def validation_accuracy(model_path: Path, dataset: str, test_dataset: str, seed: int) -> float:
    """A saved model's accuracy on the validation split `digits.train --seed SEED` held out."""
    from digits.data import load_dataset
    from digits.deploy.runtimes import load_runtime

    data = load_dataset(dataset, test_dataset=test_dataset, seed=seed, announce=False)
    predicted = load_runtime(model_path).predict(data.val.x).argmax(axis=1)
    return float((predicted == data.val.y).mean())


def summary(rows: list[dict]) -> str:
    lines = ["variant | seeds | val acc (mean) | val loss (mean) | test acc mean (each) | "
             "time (mean)"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        tests = [100 * r["test_accuracy"] for r in mine]
        lines.append(
            f"{variant} | {len(mine)} | "
            f"{100 * statistics.mean(r['val_accuracy'] for r in mine):.2f}% | "
            f"{statistics.mean(r['val_loss'] or float('nan') for r in mine):.4f} | "
            f"{statistics.mean(tests):.2f}% ({', '.join(f'{t:.2f}' for t in tests)}) | "
            f"{statistics.mean(r['seconds'] for r in mine):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, metavar='NAME="FLAGS"',
                        help="a variant: its name and the digits.train flags it adds")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--test-dataset", default="mnist-test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep each run's directory (its model.keras) as DIR/VARIANT/seed_S")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()] \
        if args.out.is_file() else []
    done = {(r["variant"], r["seed"]) for r in rows}
    for seed in (int(s) for s in args.seeds.split(",")):
        for spec in args.variant:
            name, _, flags = spec.partition("=")
            if (name, seed) in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                log_dir = args.keep / name / f"seed_{seed}" if args.keep else Path(tmp)
                row = {"variant": name, "flags": flags, "seed": seed,
                       **run_one(shlex.split(flags), seed, args.dataset, args.test_dataset,
                                 log_dir)}
            rows.append(row)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
