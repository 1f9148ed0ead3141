"""Every run in TensorBoard's HParams table: hand-run `digits.train` runs and tuner trials alike."""

from __future__ import annotations

from digits.callbacks.base import Callback

# The trainer settings a run's row shows (besides the model and its hyperparameters).
SETTINGS = ("optimizer", "learning_rate", "lr_schedule", "label_smoothing", "batch_size",
            "max_epochs", "precision", "seed")
# (tag, the run directory below the session that holds it, shown as)
METRICS = (
    ("epoch_accuracy", "validation", "validation accuracy"),
    ("epoch_loss", "validation", "validation loss"),
    ("test/accuracy", "test", "test accuracy"),
    ("test/loss", "test", "test loss"),
    ("epoch_accuracy", "train", "train accuracy"),
    ("epoch_loss", "train", "train loss"),
)


def run_hparams(config: dict) -> dict:
    """A run's configuration (its `config.json`) as HParams values: the model, every model
    hyperparameter (defaults included, so hand runs and trials share columns), the data and
    the trainer settings that change results."""
    from digits.errors import ModelError
    from digits.models import model_hyperparameters

    model = str(config.get("model", "model"))
    try:
        values = {"model": model, **model_hyperparameters(model)}
    except ModelError:  # a model of the user's own: its name only
        values = {"model": model}
    values.update(config.get("hyperparameters") or {})
    trainer = config.get("trainer") or {}
    values.update({k: trainer[k] for k in SETTINGS if k in trainer})
    data = config.get("data") or {}
    if data.get("name"):
        values["dataset"] = data["name"]
    return {k: _plain(v) for k, v in values.items() if _plain(v) is not None}


class HParams(Callback):
    """Write the run's hyperparameters into its run directory for TensorBoard's HParams tab.

    When fitting starts (not again on resume), `<run>/` gets the HParams session: the model,
    its hyperparameters (defaults included), the dataset and the trainer settings (`SETTINGS`),
    updated with `hyperparameters` (a tuner trial's searched values), and the experiment that
    declares all of them and the metrics (validation, test and train accuracy and loss), so
    that the dashboard shows every column, not only the first few it would guess. The metrics
    come from the scalars the `tensorboard` callback writes.

    Args:
        hyperparameters: `{name: value}` (bool, int, float or str) to add or override
            (keras-tuner's `tuner/...` bookkeeping entries are left out).
        group: the session group shown in the dashboard (default: one per set of values):
            the trial id, so the executions of one trial are grouped together.

    Example:
        >>> trainer = Trainer(callbacks=[TensorBoardScalars(), HParams({"note": "baseline"})])
    """

    order = 5

    def __init__(self, hyperparameters: dict | None = None, group: str | None = None) -> None:
        super().__init__()
        self.hyperparameters = dict(hyperparameters or {})
        self.group = group

    def hparams(self, config: dict | None = None) -> dict:
        """The values to write: the run's (from `config`) and the given ones."""
        values = run_hparams(config) if config else {}
        values.update({k: _plain(v) for k, v in self.hyperparameters.items()
                       if not k.startswith("tuner/")})
        return values

    def on_fit_start(self, trainer) -> None:
        if trainer.run is None or trainer.fast_dev_run or trainer.resumed_from_epoch is not None:
            return
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        values = self.hparams(trainer.config)
        writer = tf.summary.create_file_writer(str(trainer.run.path))
        try:
            with writer.as_default():
                hp.hparams_config(
                    hparams=[hp.HParam(name) for name in values],
                    metrics=[hp.Metric(tag, group=group, display_name=shown)
                             for tag, group, shown in METRICS])
                hp.hparams(values, trial_id=self.group)
        finally:
            writer.close()


def with_hparams(callbacks: list, hparams: HParams) -> list:
    """`callbacks` with `hparams` in place of any HParams callback among them (one session
    per run: a trial's values replace the default callback's)."""
    return [*(c for c in callbacks if not isinstance(c, HParams)), hparams]


def _plain(value):
    """numpy scalars to Python ones (the HParams protos take bool, int, float and str)."""
    value = value.item() if hasattr(value, "item") else value
    return value if isinstance(value, (bool, int, float, str)) else None
