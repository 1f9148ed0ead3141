"""The learning-rate range test (Leslie Smith 2015; fastai's `lr_find`, Lightning's Tuner).

A throwaway copy of the model trains a hundred steps (by default) while the learning rate
grows exponentially from `start` to `end`; the loss of each step, traced against the learning
rate, stays flat, falls, bottoms out and blows up. The suggestion is the middle (on the log
scale) of the band where the loss falls at least half as fast as at its steepest, between the
first tenth of the sweep and the lowest loss.

Why this rule (measured on the default cnn and the embedded digits, four sweeps): the curve is
smoothed by a Gaussian centred on each step. fastai's running average (0.98) lags a 100-200
step sweep by about fifty steps, more than a decade of learning rate; Lightning's steepest
single step wandered 3x between seeds here (5e-4 to 1.6e-3), as its issues #1767 and #21141
report for noisier curves; fastai's "valley" rule on the centred curve said 0.017-0.031, past
where the loss had nearly stopped falling. The band's middle said 5e-4 to 1.2e-3, close below
the 2e-3 that the architecture search settled on for this model.

`digits.train --find-lr` runs the test and writes `lr_finder.png`, `lr_finder.json` and
TensorBoard scalars and the picture under `<log-dir>/<name>/lr_finder/version_<n>`;
`--learning-rate auto` runs it and trains with its suggestion.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SKIP_START = 0.1  # the share of first steps left out of the suggestion
SMOOTHING = 0.98  # fastai's: an exponential moving average, debiased
DIVERGED = 4.0  # stop once the smoothed loss is this many times its lowest


@dataclasses.dataclass
class LRFinding:
    """What one range test found.

    Attributes:
        learning_rates: the learning rate of each step taken.
        losses: each step's training loss.
        smoothed: `losses` smoothed by a centred Gaussian (what is plotted and judged).
        suggestion: the suggested learning rate (None when no stretch of the curve fell).
        stopped_early: the loss diverged before the last planned step.
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    stopped_early: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def learning_rates(start: float, end: float, steps: int) -> np.ndarray:
    """`steps` learning rates growing exponentially from `start` to `end`."""
    return start * (end / start) ** (np.arange(steps) / max(1, steps - 1))


def centred(losses, sigma: float) -> list[float]:
    """`losses` smoothed by a Gaussian of `sigma` steps centred on each step (no lag)."""
    from scipy.ndimage import gaussian_filter1d

    if len(losses) < 2:
        return [float(v) for v in losses]
    return [float(v) for v in gaussian_filter1d(np.asarray(losses, np.float64), sigma,
                                                mode="nearest")]


def suggest(rates, smoothed) -> float | None:
    """The middle, on the log scale, of the band where the smoothed loss falls at least half
    as fast (per decade of learning rate) as at its steepest, between the first tenth of the
    sweep and the lowest loss; None when the loss never falls."""
    rates, smoothed = np.asarray(rates, np.float64), np.asarray(smoothed, np.float64)
    first = int(len(smoothed) * SKIP_START)
    if len(smoothed) - first < 3:
        return None
    lowest = first + int(np.argmin(smoothed[first:]))
    if lowest - first < 2:
        return None
    slope = np.gradient(smoothed, np.log10(rates))[first: lowest + 1]
    if slope.min() >= 0:
        return None
    band = np.flatnonzero(slope <= 0.5 * slope.min()) + first
    return float(np.sqrt(rates[band[0]] * rates[band[-1]]))


def range_test(model, batches, steps: int = 100, start: float = 1e-6, end: float = 1.0
               ) -> LRFinding:
    """Train the compiled `model` on `batches` (an iterable of (x, y), repeated as needed)
    for up to `steps` steps at exponentially growing learning rates; the model's weights are
    spent (build a fresh one to train for real). Stops early when the loss diverges."""
    rates = learning_rates(start, end, steps)
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    taken, losses = [], []
    lowest, average = math.inf, 0.0
    iterator = iter(batches)
    for rate in rates:
        try:
            x, y = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            x, y = next(iterator)
        optimizer.learning_rate = float(rate)
        logs = model.train_on_batch(x, y, return_dict=True)
        loss = float(logs["loss"])
        taken.append(float(rate))
        losses.append(loss)
        # fastai's debiased running average (its SmoothenValue), for the divergence check
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        running = average / (1 - SMOOTHING ** len(losses))
        if not math.isfinite(running) or running > DIVERGED * lowest:
            break
        lowest = min(lowest, running)
    finite = [loss if math.isfinite(loss) else 1e30 for loss in losses]
    smoothed = centred(finite, sigma=max(1.0, steps / 40))
    return LRFinding(learning_rates=taken, losses=losses, smoothed=smoothed,
                     suggestion=suggest(taken, smoothed), stopped_early=len(taken) < steps)


def plot(finding: LRFinding) -> bytes:
    """PNG bytes: the smoothed loss against the learning rate (log scale), the suggestion
    marked."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    figure.subplots_adjust(left=0.12, right=0.97, top=0.91, bottom=0.12)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(finding.learning_rates, finding.losses, color="0.75", linewidth=0.8,
              label="loss of each step")
    axes.plot(finding.learning_rates, finding.smoothed, color="C0", label="smoothed")
    if finding.suggestion is not None:
        index = int(np.argmin(np.abs(np.log(finding.learning_rates) - math.log(finding.suggestion))))
        axes.plot([finding.suggestion], [finding.smoothed[index]], "o", color="C3", markersize=8,
                  label=f"suggestion {finding.suggestion:.2g}")
    axes.set_xscale("log")
    finite = [v for v in finding.losses if math.isfinite(v)]
    if finite:
        low, high = min(finite), min(max(finite), DIVERGED * min(finding.smoothed))
        axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title("learning-rate range test")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def run(trainer, model, data, steps: int = 100, start: float = 1e-6, end: float = 1.0):
    """The range test of `model` (built by `trainer.build_model`, not yet trained: it is
    spent) on `data.train`, compiled as `trainer` would compile it (its optimizer, loss and
    batch size, a constant learning rate). Writes `lr_finder.json`, `lr_finder.png` and
    TensorBoard summaries under `<log_dir>/<name>/lr_finder/version_<n>` (nothing with
    `fast_dev_run`); returns the `LRFinding` and that directory (or None)."""
    import dataclasses as dc

    import tensorflow as tf

    from digits.data import make_pipeline
    from digits.engine.compiling import compile_model
    from digits.runs.directory import RunDirectory

    settings = dc.replace(trainer.settings, lr_schedule="constant", ema_decay=None,
                          steps_per_execution=1)
    compile_model(model, settings, steps, trainer.strategy, confusion_matrix=False)
    batches = make_pipeline(data.train, settings.batch_size, shuffle=True, seed=settings.seed)
    finding = range_test(model, batches, steps=steps, start=start, end=end)
    if trainer.fast_dev_run:
        return finding, None
    run_dir = RunDirectory.create(trainer.log_dir / (trainer.name or model.name), "lr_finder")
    png = plot(finding)
    run_dir.write_json("lr_finder.json", {"steps": steps, "start": start, "end": end,
                                          **finding.to_dict()})
    from digits.runs.atomic import atomic_write_bytes

    atomic_write_bytes(run_dir.file("lr_finder.png"), png)
    writer = tf.summary.create_file_writer(str(run_dir.path))
    with writer.as_default():
        for i, (rate, loss) in enumerate(zip(finding.learning_rates, finding.smoothed,
                                             strict=True)):
            tf.summary.scalar("lr_finder/smoothed_loss", loss, step=i)
            tf.summary.scalar("lr_finder/learning_rate", rate, step=i)
        tf.summary.image("lr_finder", tf.image.decode_png(png)[None], step=0)
        tf.summary.text("lr_finder/suggestion", describe(finding), step=0)
    writer.close()
    return finding, run_dir


def describe(finding: LRFinding) -> str:
    """One line for people: the suggestion and the range swept."""
    swept = (f"{len(finding.learning_rates)} steps from {finding.learning_rates[0]:.1g} to "
             f"{finding.learning_rates[-1]:.2g}" if finding.learning_rates else "no steps")
    if finding.suggestion is None:
        return f"learning-rate range test: no learning rate suggested (the loss never fell; {swept})"
    return f"learning-rate range test: suggested learning rate {finding.suggestion:.2g} ({swept})"
