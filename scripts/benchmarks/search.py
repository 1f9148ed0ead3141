"""The search section (when named): a search's memory over many trials, and two trials at a
time against one.

- Memory: `digits.tune` runs `search_trials` (50) short random trials on the embedded digits,
  with the default callbacks, in one process and in two workers (the default on a CPU, each
  restarted after 10 trials); each trial's `digits_trial.json` holds its process's RSS after
  it. Goal: after the last trial within 10% of after trial 5. Trials per minute are the same
  runs'.
- Parallel trials: the same random search (`search_pair_trials` trials of
  `search_pair_epochs` epochs on the whole embedded training split) run one trial at a time
  with every core, and with `--parallel-trials 2` (two worker processes, each with its share
  of the cores), alternating, `search_rounds` rounds; the ratio is parallel time over
  sequential time, start-up and all, for the whole command.

- Pruning: a random search of `search_prune_trials` trials of `search_prune_epochs` epochs
  with `--pruner median` against none (two trials at a time both): time, epochs trained, and
  the best validation score each found.

Each command runs in a subprocess; the section takes about 15 minutes with the default sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Bench, Table, median, progress, seconds

TINY_TRIAL = ["--limit-train-batches", "4", "--limit-val-batches", "2", "--max-epochs", "1"]


def tune(args: list[str], directory: Path) -> float:
    """Run `python -m digits.tune ARGS --directory DIRECTORY` (a random search, no final
    retraining); its wall time in seconds."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "digits.tune", *args, "--directory",
                             str(directory), "--final-epochs", "0", "--tuner", "random"],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"digits.tune failed ({result.returncode}): {result.stderr[-2000:]}")
    return time.perf_counter() - started


def trial_records(project: Path) -> list[dict]:
    """Each trial's digits_trial.json, in the order the trials ran."""
    found = [json.loads(p.read_text()) for p in project.glob("trial_*/digits_trial.json")]
    return sorted(found, key=lambda r: int(r["trial_id"]))


def measure_memory(bench: Bench, how: str) -> dict:
    """A search of many short trials, in one process or in two workers restarted every 10
    trials (the default on a CPU); RSS after each trial from its digits_trial.json."""
    trials = bench.sizes.search_trials
    progress(f"search: {trials} short trials, {how}, for the memory")
    directory = bench.tmp / f"search-memory-{how.replace(' ', '-')}"
    parallel = "1" if how == "one process" else "2"
    took = tune(["--max-trials", str(trials), "--parallel-trials", parallel, *TINY_TRIAL],
                directory)
    records = trial_records(directory / "random")
    rss = [r.get("rss_bytes") for r in records]
    early = rss[min(4, len(rss) - 1)]
    return {"trials": len(records), "seconds": took, "rss_bytes": rss,
            "rss_after_5": early, "rss_after_last": rss[-1], "rss_largest_after_5": max(rss[4:] or rss),
            "growth": rss[-1] / early if early else None,
            "trials_per_minute": 60 * len(records) / took}


def section_search(bench: Bench) -> dict:
    sizes = bench.sizes
    memory = {how: measure_memory(bench, how) for how in ("one process", "workers")}

    rounds = []
    common = ["--max-trials", str(sizes.search_pair_trials), "--max-epochs",
              str(sizes.search_pair_epochs)]
    for n in range(sizes.search_rounds):
        order = ("sequential", "parallel") if n % 2 == 0 else ("parallel", "sequential")
        row = {}
        for kind in order:
            progress(f"search: round {n + 1}/{sizes.search_rounds}, {kind}")
            extra = ["--parallel-trials", "2" if kind == "parallel" else "1"]
            row[kind] = tune([*common, *extra], bench.tmp / f"search-{kind}-{n}")
        rounds.append(row)
    ratios = [r["parallel"] / r["sequential"] for r in rounds]
    return {"memory": memory, "pruning": compare_pruning(bench), "parallel": {
        "trials": sizes.search_pair_trials, "epochs": sizes.search_pair_epochs,
        "rounds": rounds, "ratio_median": median(ratios),
        "sequential_median": median([r["sequential"] for r in rounds]),
        "parallel_median": median([r["parallel"] for r in rounds])}}


def compare_pruning(bench: Bench) -> dict:
    sizes = bench.sizes
    found = {}
    for pruner in ("none", "median"):
        progress(f"search: {sizes.search_prune_trials} trials, pruner {pruner}")
        directory = bench.tmp / f"search-prune-{pruner}"
        took = tune(["--max-trials", str(sizes.search_prune_trials), "--max-epochs",
                     str(sizes.search_prune_epochs), "--pruner", pruner, "--parallel-trials", "2"],
                    directory)
        records = trial_records(directory / "random")
        best = json.loads((directory / "random" / "best_hyperparameters.json").read_text())
        found[pruner] = {"seconds": took, "epochs": sum(r["epochs"] for r in records),
                         "pruned": sum(bool(r.get("pruned")) for r in records),
                         "best_score": best["score"], "best_trial": best["trial_id"]}
    return {"trials": sizes.search_prune_trials, "epochs": sizes.search_prune_epochs, **found}


def search_tables(result: dict) -> list[Table]:
    memory, parallel, pruning = result["memory"], result["parallel"], result["pruning"]
    mib = 1024 * 1024
    return [
        Table("A search's memory over its trials",
              ("how", "trials", "RSS after trial 5", "RSS after the last", "largest after 5",
               "growth (goal <= 1.10)", "trials per minute"),
              [(how, str(m["trials"]), f"{m['rss_after_5'] / mib:.0f} MiB",
                f"{m['rss_after_last'] / mib:.0f} MiB", f"{m['rss_largest_after_5'] / mib:.0f} MiB",
                "-" if m["growth"] is None else f"{m['growth']:.3f}",
                f"{m['trials_per_minute']:.1f}") for how, m in memory.items()],
              ["random search, trials of one epoch on 4 batches (default callbacks); RSS is "
               "the resident memory of the process that ran the trial, after it "
               "(digits_trial.json); workers: --parallel-trials 2, each restarted after 10 "
               "trials; trials per minute: the whole command's"]),
        Table("Two trials at a time against one (--parallel-trials 2)",
              ("trials x epochs", "one at a time", "two at a time", "two / one (median of rounds)"),
              [(f"{parallel['trials']} x {parallel['epochs']}",
                seconds(parallel["sequential_median"], 0), seconds(parallel["parallel_median"], 0),
                f"{parallel['ratio_median']:.3f}")],
              [f"{len(parallel['rounds'])} alternating rounds; whole commands, start-up included; "
               "the same seeded random search both ways"]),
        Table("Pruning (--pruner median) against none, the same random search",
              ("pruner", "trials x epochs", "epochs trained", "trials pruned", "time",
               "best val_accuracy (trial)"),
              [(name, f"{pruning['trials']} x {pruning['epochs']}",
                str(pruning[name]["epochs"]), str(pruning[name]["pruned"]),
                seconds(pruning[name]["seconds"], 0),
                f"{pruning[name]['best_score']:.4f} ({pruning[name]['best_trial']})")
               for name in ("none", "median")],
              ["two trials at a time both; median: judged from epoch 2, once 3 trials completed"]),
    ]
