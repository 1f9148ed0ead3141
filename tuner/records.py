"""What the search keeps of each trial beside keras-tuner's own files, and how it is told.

`trial_<id>/digits_trial.json` holds the trial's status, reason of failure (whole traceback
included), hyperparameters, score, epochs and runs. Both the local search (`digits.tuner.search`) and
the chief of a distributed one (`digits.tuner.distributed`) read it; it lives here so that neither
imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORD = "digits_trial.json"


def read_record(project_dir: Path, trial_id: str) -> dict | None:
    """A trial's record, or None when it has none (yet) or it cannot be read."""
    try:
        return json.loads((Path(project_dir) / f"trial_{trial_id}" / RECORD).read_text())
    except (OSError, ValueError):
        return None


def short_reason(message: str | None) -> str | None:
    """The last line of a trial's traceback, without module paths: 'FailedTrialError: ...'."""
    if not message:
        return None
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    head, sep, tail = last.partition(": ")
    if sep and "." in head and " " not in head:
        last = f"{head.rsplit('.', 1)[-1]}: {tail}"
    return last[:500]


def failure_limit_message(oracle, project_dir: Path, trial_id: str) -> str:
    """Why keras-tuner stopped the search: the limit, and the reason of the last failure."""
    record = read_record(project_dir, trial_id) or {}
    last = record.get("reason") or short_reason(getattr(oracle.trials.get(trial_id), "message",
                                                        None))
    return (f"{oracle.max_consecutive_failed_trials} trials failed in a row; the last one, "
            f"trial {trial_id}: {last or 'no reason recorded'}")
