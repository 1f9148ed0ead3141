"""What the final retraining compares at full length (`digits.tune --final-compare`).

A search's trials last 2-4 epochs, so they rank models by how fast they start. Two choices go
wrong that way, and the final retraining, which trains for the full run anyway, settles them on
validation instead:

- `default`: the search's pick against the hand-picked default (the space's defaults, with the
  `--hp` pins), when the pick is another architecture. Fast starters win short trials; on 2,000
  and on 10,000 Fashion-MNIST images the search's picks that were not the default ended 1-2
  points below it (BENCHMARKS.md). Skipped with `--choose`: the default would break the cost
  constraint.
- `augment=0`: the kept model without augmentation. Short trials always score a model without
  it higher, which ends worse on the digits and better on Fashion-MNIST, so the search's space
  never turns it off (tuner/space.py).

Each step trains the contender (one model, or an ensemble's first member; same seed, split and
length) beside the model kept so far, and keeps the more accurate on validation; a tie keeps the
one kept so far. The test split is read by the final model only. `final_choice.json` records
every step.

Example:
    >>> steps = parse("default,augment=0")
    >>> [s.text for s in steps]
    ['the hand-picked default', 'augment 0']
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

DEFAULT = "default,augment=0"


@dataclasses.dataclass(frozen=True)
class Step:
    """One comparison: against the hand-picked default (`key` None) or with `key=value`."""

    key: str | None = None
    value: object = None

    @property
    def label(self) -> str:
        """How a contender's run is named after the kept one: `best-default`, `best-augment0`."""
        return "default" if self.key is None else _setting(self.key, self.value, "")

    @property
    def text(self) -> str:
        return "the hand-picked default" if self.key is None else _setting(self.key, self.value)

    def contender(self, values: dict, pins: dict, choose: bool) -> dict | None:
        """`values` changed by this step, or None where there is nothing to compare: the same
        values already, a pinned name (the user's choice), or the default beside --choose."""
        if self.key is None:
            if choose:
                return None
            from digits.tuner.space import DIMENSIONS

            changed = {k: v if k in pins or k not in DIMENSIONS else DIMENSIONS[k].default
                       for k, v in values.items()}
        else:
            if self.key in pins:
                return None
            changed = {**values, self.key: self.value}
        return None if changed == values else changed


def _setting(key: str, value, sep: str = " ") -> str:
    """`augment 0.5`, `batch_norm False` (with `sep=""`: `augment0.5`, for a run's name)."""
    return f"{key}{sep}{value:g}" if isinstance(value, float) else f"{key}{sep}{value}"


def parse(text: str) -> tuple[Step, ...]:
    """`--final-compare`: comma-separated `default` and `NAME=VALUE` steps, or `none`."""
    if text.strip().lower() == "none":
        return ()
    steps = []
    for item in (t.strip() for t in text.split(",")):
        if item.lower() == "default":
            steps.append(Step())
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise argparse.ArgumentTypeError(
                f"expected default, NAME=VALUE or none, comma-separated; got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = raw if raw.isidentifier() else None  # optimizer=sgd
        if value is None or not isinstance(value, (int, float, bool, str)):
            raise argparse.ArgumentTypeError(f"{key}: {raw!r} is not a value")
        steps.append(Step(key, value))
    return tuple(steps)


def check(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """The steps with their values checked and normalised as `--hp` pins are (cheap: no
    TensorFlow); their ranges are checked by building them (`digits.tune`)."""
    from digits.tuner.space import check_pins

    return tuple(s if s.key is None else Step(*next(iter(check_pins(
        {s.key: s.value}, "--final-compare").items()))) for s in steps)


def compare(steps: tuple[Step, ...], values: dict, candidate, *, pins: dict, choose: bool,
            epochs: int, tta: bool, project_dir: Path, say=print) -> tuple[str, dict, list]:
    """Run the steps from the search's `values` (run `best`). `candidate(name, values)` trains
    or reuses one candidate and returns `{"run", "validation", ...}` (its validation
    `TestResult`); it is called once a name. Returns the kept run's name, its values and every
    candidate, in order (the caller finishes the losers and tests the kept one)."""
    from digits.runs.atomic import atomic_write_json
    from digits.tuner.display import plural

    seen: dict[str, dict] = {}

    def trained(name: str, hyper: dict) -> dict:
        if name not in seen:
            seen[name] = {**candidate(name, hyper), "name": name, "hyperparameters": hyper}
        return seen[name]

    kept_name, kept_values, record = "best", values, []
    for step in steps:
        other = step.contender(kept_values, pins, choose)
        if other is None:
            continue
        kept = trained(kept_name, kept_values)
        contender = trained(f"{kept_name}-{step.label}", other)
        won = contender["validation"].accuracy > kept["validation"].accuracy
        who = (_who(step, kept, kept_name == "best"), step.text)
        said = [f"{w} {c['validation'].accuracy:.2%} (loss {c['validation'].loss:.4f})"
                for c, w in zip((kept, contender), who, strict=True)]
        say(f"final comparison, validation after {plural(epochs, 'epoch')}: "
            f"{'; '.join(said)}: keeping {who[won]}", flush=True)
        record.append({"compared": "default" if step.key is None else {step.key: step.value},
                       "candidates": [_row(c) for c in (kept, contender)],
                       "kept": (contender if won else kept)["run"]})
        if won:
            kept_name, kept_values = contender["name"], other
    # Written whatever was compared (no step: none), so that no earlier run's record is left
    # to describe another final model.
    atomic_write_json(project_dir / "final_choice.json", {
        "epochs": epochs, "tta": bool(tta),
        "decided_on": "validation accuracy, at full length (a tie keeps the first)",
        "steps": record, "kept": seen[kept_name]["run"] if record else None,
        "hyperparameters": kept_values})
    return kept_name, kept_values, list(seen.values())


def _who(step: Step, kept: dict, searched: bool) -> str:
    """How the model kept so far is named in a comparison's line."""
    if step.key is None:
        return "the search's pick"
    value = _setting(step.key, kept["hyperparameters"].get(step.key))
    return f"{value} (the search's)" if searched else value


def _row(c: dict) -> dict:
    return {"run": c["run"], "hyperparameters": c["hyperparameters"],
            "val_accuracy": c["validation"].accuracy, "val_loss": c["validation"].loss}
