"""A search with several objectives: the search's metric and what a model costs to run.

`digits.tune --objectives val_accuracy,latency,size` has each trial measure its model's costs
(`digits.deploy.costs`); the oracle still optimises the metric, and at the end the completed,
unpruned trials that no other trial beats on every objective at once form the Pareto front.
`--choose "latency<=0.5ms"` picks, for the final retraining, the best trial by the metric among
those within the constraint (on the front by construction).

Plain data and arithmetic: no TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import math
import re

from digits.deploy.costs import COSTS
from digits.deploy.writers import human_size
from digits.errors import ConfigError

UNITS = {"latency": {"us": 1e-3, "ms": 1.0, "s": 1000.0, "": 1.0},
         "size": {"b": 1, "kb": 1024, "mb": 1024 ** 2, "": 1},
         "params": {"": 1, "k": 1e3, "m": 1e6}}


@dataclasses.dataclass(frozen=True)
class Objectives:
    """The search's metric (what the oracle optimises) and the costs measured beside it."""

    metric: str
    costs: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.metric, *self.costs)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """`COST<=VALUE` (or `<`): a cost in its metric's own unit (ms, bytes, parameters)."""

    cost: str
    strict: bool
    limit: float
    text: str

    def allows(self, value: float) -> bool:
        return value < self.limit if self.strict else value <= self.limit


def parse_objectives(text: str, metrics: tuple[str, ...]) -> Objectives:
    """`val_accuracy,latency,size`: one of `metrics` and one or more of `COSTS`, each once."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    chosen = [n for n in names if n in metrics]
    unknown = [n for n in names if n not in metrics and n not in COSTS]
    if unknown:
        raise ConfigError(f"--objectives: unknown {', '.join(unknown)}; give one of "
                          f"{', '.join(metrics)} and one or more of {', '.join(COSTS)}")
    costs = [n for n in names if n in COSTS]
    if len(chosen) != 1 or not costs or len(set(names)) != len(names):
        raise ConfigError(f"--objectives takes one of {', '.join(metrics)} and one or more of "
                          f"{', '.join(COSTS)}, each once (e.g. val_accuracy,latency), got "
                          f"{text!r}")
    return Objectives(chosen[0], tuple(costs))


def parse_constraint(text: str, objectives: Objectives | None) -> Constraint:
    """`latency<=0.5ms`, `size<100KB` (KB = 1,024 bytes), `params<=50k`."""
    match = re.fullmatch(r"\s*(\w+)\s*(<=|<)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*([a-zA-Z]*)\s*",
                         text)
    if not match or match.group(1) not in COSTS:
        raise ConfigError(f"--choose: expected COST<=VALUE with COST one of {', '.join(COSTS)} "
                          f"(e.g. latency<=0.5ms, size<=100KB, params<=50k), got {text!r}")
    cost, operator, number, unit = match.groups()
    if unit.lower() not in UNITS[cost]:
        raise ConfigError(f"--choose: {cost} takes a unit of "
                          f"{', '.join(u for u in UNITS[cost] if u) or 'none'}, got {unit!r}")
    if objectives is None or cost not in objectives.costs:
        raise ConfigError(f"--choose {text}: measure {cost} first, with --objectives "
                          f"{(objectives.metric if objectives else 'val_accuracy')},{cost}")
    return Constraint(cost, operator == "<", float(number) * UNITS[cost][unit.lower()],
                      text.strip())


def dominates(a: dict, b: dict, objectives: Objectives, maximise: bool) -> bool:
    """True when trial `a` is at least as good as `b` on every objective and better on one."""
    better = False
    for name in objectives.names:
        x, y = a[name], b[name]
        if name == objectives.metric and maximise:
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def front(points: list[dict], objectives: Objectives, maximise: bool) -> list[dict]:
    """The points (dicts holding every objective) that no other point dominates, best metric
    first."""
    usable = [p for p in points if all(isinstance(p.get(n), (int, float))
                                       and math.isfinite(p[n]) for n in objectives.names)]
    kept = [p for p in usable if not any(dominates(q, p, objectives, maximise) for q in usable)]
    return sorted(kept, key=lambda p: (-p[objectives.metric] if maximise
                                       else p[objectives.metric], *(p[c] for c in objectives.costs)))


def choose(points: list[dict], objectives: Objectives, constraint: Constraint,
           maximise: bool) -> dict | None:
    """The best point by the metric among those within `constraint` (ties to the cheaper);
    None when no point is within it."""
    within = [p for p in front(points, objectives, maximise) if constraint.allows(p[constraint.cost])]
    return within[0] if within else None


def describe(cost: str, value: float) -> str:
    """A cost as a person reads it: 0.43 ms, 598 KB, 586k parameters."""
    if cost == "latency":
        return f"{value:.3g} ms"
    if cost == "size":
        return human_size(value)
    return f"{value / 1e3:.0f}k" if value >= 1e4 else f"{value:.0f}"


def pareto_png(points: list[dict], kept: list[dict], objectives: Objectives, maximise: bool,
               chosen: dict | None = None) -> bytes:
    """`pareto.png`: one panel per cost, the metric against it (a log scale), every trial,
    the front drawn through its points, the chosen trial ringed."""
    import io

    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(objectives.costs), 4), dpi=100)
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(objectives.costs), squeeze=False)[0]
    ids = {p["trial_id"] for p in kept}
    for axes, cost in zip(axes_list, objectives.costs, strict=True):
        if not points:
            axes.text(0.5, 0.5, "no completed trial", ha="center", va="center")
            axes.set_axis_off()
            continue
        others = [p for p in points if p["trial_id"] not in ids and cost in p]
        axes.scatter([p[cost] for p in others], [p[objectives.metric] for p in others],
                     color="#aaaaaa", label="trial")
        line = sorted(kept, key=lambda p: p[cost])
        best = [line[0]] if line else []
        for p in line[1:]:  # the front seen along this cost alone: better metric as it grows
            if (p[objectives.metric] > best[-1][objectives.metric]) == maximise:
                best.append(p)
        axes.scatter([p[cost] for p in kept], [p[objectives.metric] for p in kept],
                     color="#d62728", label="on the Pareto front", zorder=3)
        if best:
            axes.step([p[cost] for p in best], [p[objectives.metric] for p in best],
                      where="post", color="#d62728", alpha=0.6)
        for p in kept:
            axes.annotate(str(p["trial_id"]), (p[cost], p[objectives.metric]), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        if chosen is not None:
            axes.scatter([chosen[cost]], [chosen[objectives.metric]], s=200, facecolors="none",
                         edgecolors="black", label="chosen", zorder=4)
        axes.set_xscale("log")
        # Ticks at 1, 2 and 5 of each decade, written plainly (60k, 200k; 0.1, 0.2 ms): the
        # default labelled every minor tick of a short span, overlapping.
        label = (ticker.FuncFormatter(lambda v, _: f"{v:g}") if cost == "latency"
                 else ticker.EngFormatter(sep=""))
        axes.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        axes.xaxis.set_major_formatter(label)
        axes.xaxis.set_minor_formatter(label)
        axes.set_xlabel({"latency": "one-image latency, ms (int8 ONNX, 1 thread)",
                         "size": "file size, bytes (int8 ONNX)",
                         "params": "parameters"}[cost])
        axes.set_ylabel(objectives.metric)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right" if maximise else "upper right", fontsize=8)
    figure.suptitle(f"Pareto front: {len(kept)} of {len(points)} trials")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
