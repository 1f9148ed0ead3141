"""What mattered in a search: how much of the objective's spread each hyperparameter explains,
and the search's history as a picture.

Importance is a one-way analysis of variance per hyperparameter over the completed trials:
the trials are grouped by the hyperparameter's value (numbers with more than four distinct
values into four quantile bins, on a log scale for positive ones spanning a decade or more,
such as the learning rate), and the share is epsilon squared, the between-group part of the
objective's variance corrected for the groups' count (plain eta squared would credit any
hyperparameter with many values on few trials). It looks at one hyperparameter at a time, so
interactions are not in it; with fewer than about ten trials, read it as a hint.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 4


def groups_of(values: list) -> np.ndarray:
    """A group index per trial: the value itself, or its quantile bin for many numbers."""
    distinct = sorted(set(values), key=str)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric or len(distinct) <= BINS:
        return np.array([distinct.index(v) for v in values])
    x = np.asarray(values, dtype=np.float64)
    if x.min() > 0 and x.max() / x.min() >= 10:
        x = np.log10(x)
    edges = np.quantile(x, np.linspace(0, 1, BINS + 1)[1:-1])
    return np.searchsorted(edges, x, side="right")


def importance(trials: list[tuple[dict, float]]) -> list[tuple[str, float, int]]:
    """(hyperparameter, share of the objective's variance it explains, groups), largest
    first, from (values, score) pairs; hyperparameters with one value, or too few trials per
    group to tell within-group spread, are left out."""
    trials = [(v, s) for v, s in trials if s is not None and math.isfinite(s)]
    if len(trials) < 3:
        return []
    scores = np.array([s for _, s in trials], dtype=np.float64)
    total = float(((scores - scores.mean()) ** 2).sum())
    found = []
    names = sorted({name for values, _ in trials for name in values})
    for name in names:
        present = [(values[name], s) for values, s in trials if name in values]
        if len(present) < 3 or len({str(v) for v, _ in present}) < 2 or total <= 0:
            continue
        groups = groups_of([v for v, _ in present])
        y = np.array([s for _, s in present])
        k, n = len(set(groups.tolist())), len(y)
        if n - k < 1:
            continue  # one trial per group: nothing to compare the groups against
        between = sum(len(y[groups == g]) * (y[groups == g].mean() - y.mean()) ** 2
                      for g in set(groups.tolist()))
        within = float(((y - np.array([y[groups == g].mean() for g in groups])) ** 2).sum())
        share = (between - (k - 1) * within / (n - k)) / total
        found.append((name, float(min(max(share, 0.0), 1.0)), k))
    return sorted(found, key=lambda row: -row[1])


def importance_text(rows: list[tuple[str, float, int]], trials: int) -> str:
    """The table as markdown (TensorBoard's Text tab) with the caveat."""
    lines = ["| hyperparameter | share of the objective's variance | groups |", "|---|---|---|"]
    lines += [f"| {name} | {share:.1%} | {groups} |" for name, share, groups in rows]
    lines.append(f"\nfrom {trials} completed trials, one hyperparameter at a time "
                 "(epsilon squared); with fewer than about ten trials, a hint")
    return "\n".join(lines)


def history_png(scores: list[tuple[int, float]], objective: str, maximise: bool) -> bytes:
    """`search_history.png`: each completed trial's score in the order it was created, and
    the best so far."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if scores:
        order, values = zip(*scores, strict=True)
        best = np.maximum.accumulate(values) if maximise else np.minimum.accumulate(values)
        axes.plot(order, values, "o", color="#1f77b4", label="trial")
        axes.step(order, best, where="post", color="#d62728", label="best so far")
        axes.legend(loc="lower right" if maximise else "upper right")
    axes.set_xlabel("trial")
    axes.set_ylabel(objective)
    axes.set_title(f"search history: {len(scores)} completed trials")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
