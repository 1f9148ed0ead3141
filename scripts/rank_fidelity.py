#!/usr/bin/env python
"""Does a search's ranking predict where its models end? Trial scores against full training.

Reads a finished `digits.tune` project, takes each distinct configuration it tried (with its
score at the most epochs it reached: what the search ranked it by), trains that configuration to
the end with `digits.train` on the same split (the same --dataset, --seed and
--validation-split as the search, so the same validation images), and reports Spearman's rank
correlation between the trial scores and the full runs' validation accuracy (last epoch, and
best epoch). The test split is never read. Each full run is an ordinary resumable run under
--log-dir: a finished one is read back instead of trained again, so the script can be cut off
and rerun.

Usage:
    python scripts/rank_fidelity.py PROJECT_DIR [--top K] [--epochs N] [--dataset SPEC]
        [--seed N] [--validation-split F] [--log-dir DIR] [--json out.json] [-- FLAGS]

Example (issue 31: a rank correlation >= 0.8 is the goal):
    python -m digits.tune --directory logs/tune --project main
    python scripts/rank_fidelity.py logs/tune/main --top 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def configurations(project: Path) -> list[dict]:
    """Each distinct configuration of the project's completed trials, best score first:
    {"values", "score", "trial_id", "epochs"}; a configuration Hyperband promoted keeps the
    score of its longest trial (the one the search ranked it by)."""
    found: dict[str, dict] = {}
    for path in sorted(Path(project).glob("trial_*/trial.json")):
        trial = json.loads(path.read_text())
        if trial.get("status") != "COMPLETED" or trial.get("score") is None:
            continue
        raw = trial["hyperparameters"]["values"]
        values = {k: v for k, v in raw.items() if not k.startswith("tuner/")}
        epochs = int(raw.get("tuner/epochs") or _trained_epochs(path.parent))
        key = json.dumps(values, sort_keys=True)
        if key not in found or epochs >= found[key]["epochs"]:
            found[key] = {"values": values, "score": float(trial["score"]),
                          "trial_id": trial["trial_id"], "epochs": epochs}
    return sorted(found.values(), key=lambda c: (-c["score"], c["trial_id"]))


def _trained_epochs(trial_dir: Path) -> int:
    """The epochs a trial trained, from the search's own record of it (0: unknown)."""
    try:
        return int(json.loads((trial_dir / "digits_trial.json").read_text()).get("epochs") or 0)
    except (OSError, ValueError, TypeError):
        return 0


def train_command(config: dict, args) -> list[str]:
    """`digits.train` for one configuration, on the search's split."""
    values = dict(config["values"])
    command = [sys.executable, "-m", "digits.train", "--dataset", args.dataset,
               "--seed", str(args.seed), "--validation-split", str(args.validation_split),
               "--optimizer", str(values.pop("optimizer")),
               "--learning-rate", repr(float(values.pop("learning_rate"))),
               "--no-tta", "--log-dir", str(args.log_dir), "--name", f"trial_{config['trial_id']}"]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    for name, value in sorted(values.items()):
        command += ["--hp", f"{name}={value!r}"]
    return command + list(args.train_args)


def finished_run(log_dir: Path, name: str) -> dict | None:
    """The metrics of the latest run of this name if it finished (a cut-off run resumes in its
    own version directory), else None."""
    from digits.runs.directory import RunDirectory

    latest = RunDirectory.latest(log_dir, name)
    metrics = (latest.read_json("metrics.json") or {}) if latest is not None else {}
    return metrics if metrics.get("status") == "finished" else None


def spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None  # undefined: too few, or a side without two different values
    return float(spearmanr(a, b).statistic)


def bootstrap_interval(a: list[float], b: list[float], draws: int = 2000,
                       seed: int = 0) -> tuple[float, float] | None:
    """The 5th and 95th percentiles of Spearman's correlation over the configurations drawn with
    replacement (draws where it is undefined are left out): how far a few configurations
    let the figure move. None when it is undefined on the whole."""
    import numpy as np

    if spearman(a, b) is None:
        return None
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, float), np.asarray(b, float)
    rhos = []
    for _ in range(draws):
        drawn = rng.integers(0, len(a), len(a))
        rho = spearman(list(a[drawn]), list(b[drawn]))
        if rho is not None:
            rhos.append(rho)
    low, high = np.percentile(rhos, [5, 95])
    return float(low), float(high)


def along_the_way(rows: list[dict]) -> list[tuple[int, float | None]]:
    """Spearman of the full runs' validation accuracy after k epochs against their last epoch,
    for k = 1, 2, 3, 4, 6, 8, 12, 16, ... up to the shortest run (the last one excluded)."""
    shortest = min(len(r["full_history"]) for r in rows)
    last = [r["full_history"][-1] for r in rows]
    ks = [k for k in (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 48, 64) if k < shortest]
    return [(k, spearman([r["full_history"][k - 1] for r in rows], last)) for k in ks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a digits.tune project directory")
    parser.add_argument("--top", type=int, default=None,
                        help="only the K best configurations (default: all)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of each full run (default: digits.train's for the data)")
    parser.add_argument("--dataset", default="mnist-5k", help="the search's --dataset")
    parser.add_argument("--seed", type=int, default=0, help="the search's --seed")
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where the full runs go (default: PROJECT/fidelity)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.epilog = "Flags after -- go to every digits.train run (e.g. -- --batch-size 64)."
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.train_args = argv[cut + 1:]
    if not (args.project / "oracle.json").is_file():
        print(f"error: {args.project}: not a digits.tune project (no oracle.json)",
              file=sys.stderr)
        return 2
    args.log_dir = args.log_dir or args.project / "fidelity"
    chosen = configurations(args.project)[: args.top]
    if len(chosen) < 3:
        print(f"error: {args.project}: {len(chosen)} completed configurations; a rank "
              "correlation takes at least 3", file=sys.stderr)
        return 2
    rows = []
    for k, config in enumerate(chosen, 1):
        name = f"trial_{config['trial_id']}"
        metrics = finished_run(args.log_dir, name)
        if metrics is None:
            print(f"[{k}/{len(chosen)}] training {name} to the end", flush=True)
            done = subprocess.run(train_command(config, args), cwd=ROOT, capture_output=True,
                                  text=True)
            metrics = finished_run(args.log_dir, name)
            if done.returncode != 0 or metrics is None:
                print(f"error: {name}: digits.train failed: {done.stderr.strip()[-500:]}",
                      file=sys.stderr)
                return 1
        history = metrics["history"]["val_accuracy"]
        rows.append({**config, "full_last": history[-1], "full_best": max(history),
                     "full_epochs": len(history), "full_history": history})
        print(f"  trial {config['trial_id']}: score {config['score']:.4f} at "
              f"{config['epochs'] or '?'} epochs; full ({len(history)} epochs) validation "
              f"{history[-1]:.4f} (best {max(history):.4f})", flush=True)
    scores, last = [r["score"] for r in rows], [r["full_last"] for r in rows]
    interval = bootstrap_interval(scores, last)
    result = {"project": str(args.project), "configurations": len(rows),
              "spearman_last": spearman(scores, last),
              "spearman_best": spearman(scores, [r["full_best"] for r in rows]),
              "spearman_last_5_95": interval, "rows": rows}
    def shown(rho):
        return "undefined (a side without two different values)" if rho is None else f"{rho:.2f}"

    print(f"Spearman rank correlation over {len(rows)} configurations: "
          f"{shown(result['spearman_last'])} with the full runs' last epoch, "
          f"{shown(result['spearman_best'])} with their best"
          + (f" (bootstrap over the configurations, 5-95%: {interval[0]:.2f} to {interval[1]:.2f})"
             if interval else ""))
    result["along_the_way"] = along_the_way(rows)
    print("ranked by the full runs' own validation after k epochs (what a search of full-length "
          "trials pruned at epoch k, such as --pruner asha --max-epochs "
          f"{min(r['full_epochs'] for r in rows)}, would rank by), against their last epoch: "
          + ", ".join(f"k={k} {shown(rho)}" for k, rho in result["along_the_way"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
