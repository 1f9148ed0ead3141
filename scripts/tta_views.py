"""Which test-time augmentation helps: each set of `digits.recipes.tta` views on validation.

For each run directory given (a `digits.train` run with its model.keras and config.json), the
run's own validation split is rebuilt from its config (dataset, split, seed) and read with each
set of views; the table gives accuracy and loss per set, summed over the runs (more images than
one split's 500). Only validation: the official test set chooses nothing.

Example:
    python scripts/tta_views.py /tmp/dev/runs/base/seed_*/run/version_0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SETS = {
    "none": ("identity",),
    "shifts": ("identity", "up", "down", "left", "right"),
    "turns": ("identity", "turn-left", "turn-right"),
    "shifts+turns": ("identity", "up", "down", "left", "right", "turn-left", "turn-right"),
}


def main(argv: list[str]) -> int:
    from digits.data import load_dataset
    from digits.deploy.runtimes import load_runtime
    from digits.recipes import tta

    totals = {name: [0, 0, 0.0] for name in SETS}  # right, seen, summed loss
    for run in (Path(a) for a in argv):
        config = json.loads((run / "config.json").read_text())
        data = load_dataset(config["dataset"], test_dataset=config.get("test_dataset"),
                            validation_split=config["validation_split"],
                            seed=config["trainer"]["seed"], announce=False)
        runtime = load_runtime(run / "model.keras")
        x, y = data.val.x, data.val.y
        for name, views in SETS.items():
            p = tta.averaged(runtime.predict, x, views)
            totals[name][0] += int((p.argmax(1) == y).sum())
            totals[name][1] += len(y)
            totals[name][2] += float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).sum())
    print("views | validation accuracy | loss | images")
    for name, (right, seen, loss) in totals.items():
        print(f"{name} | {100 * right / seen:.2f}% | {loss / seen:.4f} | {seen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
