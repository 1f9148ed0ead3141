"""Fill TensorBoard's HParams dashboard with each trial's hyperparameters."""

from __future__ import annotations

from callbacks.base import Callback


class HParamsSummary(Callback):
    """Write a trial's hyperparameters into its run directory for TensorBoard's HParams tab.

    keras-tuner does this only for a `keras.callbacks.TensorBoard` in the callback list; digits'
    TensorBoard scalars come from its own callback, so this one writes the HParams session
    (`_hparams_/session_start_info`) into `<run>/` itself, beside the `train/` and
    `validation/` scalars the dashboard reads the metrics from. A resumed run already has its
    session, so nothing is written again.

    Args:
        hyperparameters: `{name: value}` with bool, int, float or str values (keras-tuner's
            `tuner/...` bookkeeping entries are left out).
        group: the session group shown in the dashboard (default: none): the trial id, so the
            executions of one trial are grouped together.

    Example:
        >>> trainer = Trainer(callbacks=[TensorBoardScalars(), HParamsSummary({"filters": 32})])
    """

    name = "hparams"
    order = 5

    def __init__(self, hyperparameters: dict, group: str | None = None) -> None:
        super().__init__()
        self.hyperparameters = dict(hyperparameters)
        self.group = group

    def hparams(self) -> dict:
        """The values to write, without keras-tuner's bookkeeping."""
        return {k: _plain(v) for k, v in self.hyperparameters.items() if not k.startswith("tuner/")}

    def on_fit_start(self, trainer) -> None:
        if trainer.run is None or trainer.fast_dev_run or trainer.resumed_from_epoch is not None:
            return
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hparams_api

        writer = tf.summary.create_file_writer(str(trainer.run.path))
        try:
            with writer.as_default():
                hparams_api.hparams(self.hparams(), trial_id=self.group)
        finally:
            writer.close()


def _plain(value):
    """numpy scalars to Python ones (the HParams protos take bool, int, float and str)."""
    return value.item() if hasattr(value, "item") else value
