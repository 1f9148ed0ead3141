"""What mattered in a search: each hyperparameter's share of what explains the objective, with
an uncertainty, and the search's history as a picture.

Importance is fANOVA (Hutter, Hoos and Leyton-Brown 2014) on a random forest: a forest of
regression trees (scikit-learn) is fitted to the completed trials (hyperparameters -> score),
and each tree's prediction, taken over the whole observed range of every hyperparameter, is
split into the variance that each hyperparameter explains on its own (its main effect, the
variance of the tree's prediction averaged over all the others) and the rest (interactions).
A hyperparameter's share is its main effect over the sum of the main effects, so the shares add
up to 100%; its uncertainty is the spread of that share between the trees, each fitted to
another bootstrap sample of the trials (with a handful of trials, it is wide, as it should be).
Numbers are read on a log scale when positive and spanning a decade or more (the learning
rate), choices and switches as categories of equal width. Below `MIN_TRIALS` completed trials
nothing is claimed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

MIN_TRIALS = 8
TREES = 64


@dataclass(frozen=True)
class Share:
    """One hyperparameter's share of the main effects (0-1), its spread between trees, and
    how many distinct values the trials had."""

    name: str
    share: float
    spread: float
    values: int


@dataclass(frozen=True)
class Importance:
    """What a search's completed trials say: `shares`, largest first and summing to 1 (empty
    when `reason` says why nothing is claimed), and `main_effects`, the part of the score's
    variance that the hyperparameters explain one at a time (the rest is their
    interactions)."""

    trials: int
    shares: tuple[Share, ...] = ()
    main_effects: float = 0.0
    reason: str = ""

    def line(self) -> str:
        """One console line."""
        if not self.shares:
            return f"what mattered: {self.reason}"
        return ("what mattered (fANOVA over a random forest of the "
                f"{self.trials} unpruned trials; share of the main effects +- spread between "
                f"trees; interactions hold the other {1 - self.main_effects:.0%} of the "
                "score's variance): " + ", ".join(
                    f"{s.name} {s.share:.0%} +- {s.spread:.0%}" for s in self.shares))


def _column(values: list) -> tuple[np.ndarray, tuple[float, float]]:
    """One hyperparameter as numbers for the forest, and the range the analysis averages over:
    numbers as they are (log10 when positive and spanning a decade), anything else as the index
    of its category, each category one unit wide."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        x = np.asarray(values, dtype=np.float64)
        if x.min() > 0 and x.max() / x.min() >= 10:
            x = np.log10(x)
        return x, (float(x.min()), float(x.max()))
    categories = sorted({str(v) for v in values})
    x = np.array([categories.index(str(v)) for v in values], dtype=np.float64)
    return x, (-0.5, len(categories) - 0.5)


def _leaves(tree, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaves of a fitted scikit-learn tree as boxes within `bounds` (d x 2):
    lower corners, upper corners (leaves x d) and values."""
    lows, highs, values = [], [], []
    stack = [(0, bounds[:, 0].copy(), bounds[:, 1].copy())]
    while stack:
        node, low, high = stack.pop()
        left, right = tree.children_left[node], tree.children_right[node]
        if left == -1:
            lows.append(low)
            highs.append(high)
            values.append(float(tree.value[node].ravel()[0]))
            continue
        feature, threshold = tree.feature[node], tree.threshold[node]
        left_high, right_low = high.copy(), low.copy()
        left_high[feature] = min(high[feature], threshold)
        right_low[feature] = max(low[feature], threshold)
        stack.append((left, low, left_high))
        stack.append((right, right_low, high))
    return np.array(lows), np.array(highs), np.array(values)


def main_effects(tree, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """Each feature's main-effect variance of one tree's prediction, uniform over `bounds`,
    and the prediction's total variance."""
    low, high, value = _leaves(tree, bounds)
    width = bounds[:, 1] - bounds[:, 0]
    fraction = np.clip(high - low, 0, None) / width  # leaves x d
    weight = fraction.prod(axis=1)
    mean = float(weight @ value)
    total = float(weight @ value ** 2) - mean ** 2
    effects = np.zeros(len(bounds))
    for j in range(len(bounds)):
        cuts = np.unique(np.clip(np.concatenate([low[:, j], high[:, j]]), *bounds[j]))
        if len(cuts) < 2:
            continue
        middles, lengths = (cuts[:-1] + cuts[1:]) / 2, np.diff(cuts) / width[j]
        others = np.delete(fraction, j, axis=1).prod(axis=1)
        inside = (low[:, j, None] <= middles) & (middles < high[:, j, None])  # leaves x cuts
        marginal = (value * others) @ inside
        effects[j] = max(float(lengths @ marginal ** 2) - mean ** 2, 0.0)
    return effects, max(total, 0.0)


def importance(trials: list[tuple[dict, float]], seed: int = 0) -> Importance:
    """What mattered, from (values, score) pairs of completed trials: see the module's
    docstring. A hyperparameter with one value in every trial is left out; one a trial lacks
    (a conditional one) takes its most common value there."""
    trials = [(v, s) for v, s in trials if s is not None and math.isfinite(s)]
    n = len(trials)
    if n < MIN_TRIALS:
        return Importance(n, reason=f"too few trials to say ({n} unpruned, at least "
                                    f"{MIN_TRIALS} needed)")
    scores = np.array([s for _, s in trials], dtype=np.float64)
    if np.ptp(scores) == 0:
        return Importance(n, reason=f"every one of the {n} trials scored the same")
    names, columns, bounds, counts = [], [], [], []
    for name in sorted({name for values, _ in trials for name in values}):
        present = [values[name] for values, _ in trials if name in values]
        common = Counter(map(str, present)).most_common(1)[0][0]
        fill = next(v for v in present if str(v) == common)
        column = [values.get(name, fill) for values, _ in trials]
        if len({str(v) for v in column}) < 2:
            continue
        x, span = _column(column)
        names.append(name)
        columns.append(x)
        bounds.append(span)
        counts.append(len({str(v) for v in column}))
    if not names:
        return Importance(n, reason=f"no hyperparameter varied over the {n} trials")
    from sklearn.ensemble import RandomForestRegressor

    features, box = np.stack(columns, axis=1), np.array(bounds)
    forest = RandomForestRegressor(n_estimators=TREES, random_state=seed).fit(features, scores)
    shares, explained = [], []
    for estimator in forest.estimators_:
        effects, total = main_effects(estimator.tree_, box)
        if effects.sum() > 0 and total > 0:
            shares.append(effects / effects.sum())
            explained.append(min(effects.sum() / total, 1.0))
    if not shares:
        return Importance(n, reason=f"the forest found no effect in the {n} trials")
    shares = np.array(shares)
    mean = shares.mean(axis=0)
    mean = mean / mean.sum()
    spread = shares.std(axis=0)
    order = np.argsort(-mean, kind="stable")
    return Importance(n, tuple(Share(names[i], float(mean[i]), float(spread[i]), counts[i])
                               for i in order), float(np.mean(explained)))


def importance_text(found: Importance) -> str:
    """The table as markdown (TensorBoard's Text tab), with what it rests on."""
    if not found.shares:
        return found.line()
    lines = ["| hyperparameter | share of the main effects | spread between trees | values |",
             "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.share:.1%} | +- {s.spread:.1%} | {s.values} |"
              for s in found.shares]
    lines.append(f"\nfANOVA over a random forest of {TREES} trees fitted to {found.trials} "
                 f"unpruned trials; the shares add up to 100% of the main effects, which explain "
                 f"{found.main_effects:.0%} of the score's variance (interactions the rest)")
    return "\n".join(lines)


def history_png(scores: list[tuple[int, float]], objective: str, maximise: bool,
                found: Importance | None = None) -> bytes:
    """`search_history.png`: each completed trial's score in the order it was created and the
    best so far; beside it, with `found`, what mattered (shares with their spread as error
    bars, or why nothing is claimed)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7 if found is None else 12, 4), dpi=100)
    FigureCanvasAgg(figure)
    if found is None:
        axes = figure.add_subplot()
    else:
        axes, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [7, 5]})
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
    if found is not None:
        if found.shares:
            shares = list(reversed(found.shares))
            y = np.arange(len(shares))
            bars.barh(y, [100 * s.share for s in shares], xerr=[100 * s.spread for s in shares],
                      color="#2ca02c", ecolor="#555555", capsize=3)
            bars.set_yticks(y, [s.name for s in shares])
            bars.set_xlim(0, 100)
            bars.set_xlabel("share of the main effects, % (+- spread between trees)")
            bars.set_title(f"what mattered ({found.trials} trials; interactions "
                           f"{1 - found.main_effects:.0%} of the variance)", fontsize=10)
            bars.grid(alpha=0.3, axis="x")
        else:
            bars.set_axis_off()
            bars.text(0.5, 0.5, f"what mattered:\n{found.reason}", ha="center", va="center",
                      wrap=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
