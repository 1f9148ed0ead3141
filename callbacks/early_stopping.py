"""Stop training when a monitored metric has stopped improving; patience survives a resume."""

from __future__ import annotations

import sys

from digits.callbacks.monitor import MonitorCallback

BEST_WEIGHTS_FILE = "early_stopping.best.weights.h5"


class EarlyStopping(MonitorCallback):
    """Stop training when `monitor` has not improved for `patience` epochs.

    Like Keras' `EarlyStopping`, its state lives in a few fields: `wait` (epochs since the last
    improvement), `best` and `best_epoch` (1-based), and `stopped_epoch` (1-based, 0 while
    training goes on). They are saved with the run each epoch, so a resumed run resumes its
    patience instead of starting it over. It stops the run with `trainer.stop("early stopping:
    ...")`, a normal end of `fit`, not a fault (`trainer.stop_reason` then reads so).

    Args:
        monitor: the epoch log key to watch (default "val_loss").
        patience: epochs without improvement before stopping (default 5).
        min_delta: the smallest change that counts as an improvement (default 0).
        mode: "min", "max", or "auto": "min" for losses, "max" otherwise (default "auto").
        restore_best_weights: at the end of training, put back the weights of the best epoch;
            under the Trainer they are also kept in the run's state, so a resumed run can
            restore an epoch trained before the resume (default False).

    Example:
        >>> stop = EarlyStopping(monitor="val_accuracy", patience=3)
        >>> trainer = Trainer(max_epochs=50, callbacks=[stop])
        >>> trainer.fit(trainer.build_model("cnn"), load_dataset("mnist-5k"))
        >>> trainer.stop_reason
        'early stopping: val_accuracy did not improve for 3 epochs (best 0.9860 at epoch 9)'
    """

    order = 60

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0,
                 mode: str = "auto", restore_best_weights: bool = False) -> None:
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a whole number >= 0, got {patience!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)
        self.wait = 0
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.best_weights = None
        self._restored = False

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "wait": self.wait, "best": self.best,
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        if state.get("monitor") != self.monitor:
            return  # a different metric's patience means nothing for this one
        self.wait = int(state.get("wait", 0))
        self.best = state.get("best")
        self.best_epoch = int(state.get("best_epoch", 0))
        self.stopped_epoch = int(state.get("stopped_epoch", 0))
        self._restored = True

    # -- hooks --------------------------------------------------------------------------

    def on_fit_start(self, trainer) -> None:
        if not self._restored:
            self._reset()
        self._restored = False

    def on_train_begin(self, logs=None) -> None:
        if self.trainer is None:  # a plain Keras callback: each `model.fit` starts afresh
            self._reset()

    def _reset(self) -> None:
        self.wait, self.best, self.best_epoch, self.stopped_epoch = 0, None, 0, 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = self.monitored(logs)
        self.wait += 1
        if self.is_better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
                self._save_best_weights()
            return
        if self.wait >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            best = "none finite" if self.best is None else \
                f"best {self.best:.4f} at epoch {self.best_epoch}"
            reason = (f"{self.monitor} did not improve for {self.wait} "
                      f"epoch{'s' if self.wait != 1 else ''} ({best})")
            trainer = self.trainer
            if trainer is not None:
                trainer.stop(f"early stopping: {reason}")
            if trainer is None or trainer.verbose:
                print(f"early stopping at epoch {epoch + 1}: {reason}", file=sys.stderr, flush=True)

    def on_train_end(self, logs=None) -> None:
        if not self.restore_best_weights or not self.best_epoch:
            return
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif self._best_weights_path() is not None and self._best_weights_path().is_file():
            # Resumed: the best epoch was trained before the resume.
            self.model.load_weights(self._best_weights_path())

    # -- best weights across a resume --------------------------------------------------------

    def _best_weights_path(self):
        trainer = self.trainer
        if trainer is None or trainer.run is None or trainer.fast_dev_run:
            return None
        from digits.runs.state import STATE_DIR

        return trainer.run.file(STATE_DIR) / BEST_WEIGHTS_FILE

    def _save_best_weights(self) -> None:
        path = self._best_weights_path()
        if path is None:
            return
        from digits.runs.atomic import atomic_path

        with atomic_path(path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
