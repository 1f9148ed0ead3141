"""Every public callback of `keras.callbacks`, side by side: Keras' own `model.fit` and
`Trainer.fit`, the same model, data and seed.

Each callback's hooks are recorded as it receives them (the hook, the epoch or batch number, the
log keys) and must come in the same order with the same numbers; the Trainer may add log keys,
never drop one. Then its effect is compared: files written, the epoch it stopped at, the
learning rates it set. Where the Trainer differs on purpose, the test says so:
- `ReduceLROnPlateau` and `LearningRateScheduler` need a settable rate: the Trainer trains at a
  constant rate instead of its cosine schedule, and says so once;
- `SwapEMAWeights` is refused before training: the Trainer's `ema_decay` does its work;
- `TerminateOnNaN` ends the epoch as in Keras, and the Trainer keeps no state of NaN weights
  only with its own `nan_guard` (this one just stops).
Run against the Keras version digits pins, so that an upgrade that changes a hook shows here.
"""

from __future__ import annotations

import http.server
import json
import threading

import keras
import numpy as np
import pytest

from digits.engine.dispatch import hook_method

EPOCHS, BATCH, TRAIN_BATCHES, EVAL_BATCH = 3, 32, 4, 512
HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_test_begin",
         "on_test_end", "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin",
         "on_test_batch_end")


def record_hooks(callback) -> list:
    """Wrap every hook `callback` acts in (as the dispatcher finds it) so that each call is
    recorded as (hook, number, log keys); the wrappers are set on the instance."""
    seen = []
    for hook in HOOKS:
        if hook_method(callback, hook) != hook:
            continue
        original = getattr(callback, hook)

        def recorded(*args, _hook=hook, _original=original, **kwargs):
            logs = kwargs.get("logs", args[-1] if args and isinstance(args[-1], dict) else None)
            number = args[0] if args and isinstance(args[0], int) else None
            seen.append((_hook, number, sorted(logs or {})))
            return _original(*args, **kwargs)

        setattr(callback, hook, recorded)
    return seen


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(16, activation="tanh"),  # NaN stays NaN
                             keras.layers.Dense(10, activation="softmax")])


def keras_fit(data, callback, learning_rate=2e-3, poison=False, verbose=0):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = data.train.x[:TRAIN_BATCHES * BATCH].copy(), data.train.y[:TRAIN_BATCHES * BATCH]
    if poison:
        x[:] = np.nan
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=verbose,
              validation_data=(data.val.x[:EVAL_BATCH], data.val.y[:EVAL_BATCH]),
              validation_batch_size=EVAL_BATCH, callbacks=[callback])
    return model


def trainer_fit(data, callback, tmp_path, poison=False):
    from digits.data import Dataset, Split
    from digits.engine.trainer import Trainer

    if poison:
        data = Dataset(Split(np.full_like(data.train.x, np.nan), data.train.y), data.val,
                       data.test, data.name, data.description)
    trainer = Trainer(max_epochs=EPOCHS, callbacks=[callback], log_dir=tmp_path / "runs",
                      batch_size=BATCH, limit_train_batches=TRAIN_BATCHES, limit_val_batches=1,
                      steps_per_execution=1, enable_checkpointing=False)
    model = tiny_model()
    trainer.fit(model, data)
    return trainer, model


def side_by_side(data, tmp_path, make, **options):
    """(what Keras' callback saw, what the Trainer's saw, Keras' callback, the Trainer's)."""
    ours, theirs = make(tmp_path / "trainer"), make(tmp_path / "keras")
    seen_theirs, seen_ours = record_hooks(theirs), record_hooks(ours)
    keras_fit(data, theirs, poison=options.get("poison", False), verbose=options.get("verbose", 0))
    trainer_fit(data, ours, tmp_path, poison=options.get("poison", False))
    return seen_theirs, seen_ours, theirs, ours


def assert_same_hooks(seen_keras: list, seen_trainer: list) -> None:
    assert [(h, n) for h, n, _ in seen_trainer] == [(h, n) for h, n, _ in seen_keras]
    for (hook, number, keys), (_, _, ours) in zip(seen_keras, seen_trainer, strict=True):
        assert set(keys) <= set(ours), f"{hook} {number}: the Trainer dropped {set(keys) - set(ours)}"


def test_lambda_callback_fires_as_in_keras(small_data, tmp_path):
    def make(_):
        epochs = []
        callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs.append(e))
        callback.epochs = epochs
        return callback

    seen_keras, seen_trainer, theirs, ours = side_by_side(small_data, tmp_path, make)
    assert_same_hooks(seen_keras, seen_trainer)
    assert ours.epochs == theirs.epochs == [0, 1, 2]


def test_a_callback_that_sets_its_hooks_on_the_instance(small_data, tmp_path):
    class InstanceHooks(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []
            self.on_train_batch_end = lambda batch, logs=None: self.batches.append(batch)

    seen_keras, seen_trainer, theirs, ours = side_by_side(small_data, tmp_path,
                                                          lambda _: InstanceHooks())
    assert_same_hooks(seen_keras, seen_trainer)
    assert ours.batches == theirs.batches == [0, 1, 2, 3] * EPOCHS


def test_csv_logger_writes_the_same_rows_and_columns(small_data, tmp_path):
    seen_keras, seen_trainer, theirs, ours = side_by_side(
        small_data, tmp_path, lambda where: keras.callbacks.CSVLogger(str(where) + ".csv"))
    assert_same_hooks(seen_keras, seen_trainer)
    keras_rows = (tmp_path / "keras.csv").read_text().splitlines()
    trainer_rows = (tmp_path / "trainer.csv").read_text().splitlines()
    assert len(keras_rows) == len(trainer_rows) == EPOCHS + 1
    assert set(keras_rows[0].split(",")) <= set(trainer_rows[0].split(","))
    assert [r.split(",")[0] for r in trainer_rows[1:]] == ["0", "1", "2"]


def test_early_stopping_stops_at_the_same_epoch(small_data, tmp_path):
    def make(_):
        return keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)

    seen_keras, seen_trainer, theirs, ours = side_by_side(small_data, tmp_path, make)
    assert_same_hooks(seen_keras, seen_trainer)
    assert ours.stopped_epoch == theirs.stopped_epoch == 1


@pytest.mark.parametrize("kind", ["scheduler", "plateau"])
def test_learning_rate_callbacks_set_the_same_rates(small_data, tmp_path, kind, capsys):
    def make(_):
        rates = []
        if kind == "scheduler":
            callback = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 / (epoch + 1))
        else:
            callback = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0,
                                                         min_delta=10.0, factor=0.5)
        callback.rates = rates
        original = callback.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            original(epoch, logs)
            rates.append(float(keras.ops.convert_to_numpy(callback.model.optimizer.learning_rate)))

        callback.on_epoch_end = on_epoch_end
        return callback

    seen_keras, seen_trainer, theirs, ours = side_by_side(small_data, tmp_path, make)
    assert_same_hooks(seen_keras, seen_trainer)
    assert ours.rates == pytest.approx(theirs.rates)
    assert "sets the learning rate, so this run trains at a constant rate from 0.002 " \
           "instead of the cosine schedule" in capsys.readouterr().err


def test_model_checkpoint_writes_every_epochs_model(small_data, tmp_path):
    def make(where):
        where.mkdir()
        return keras.callbacks.ModelCheckpoint(str(where / "m{epoch}.keras"))

    seen_keras, seen_trainer, *_ = side_by_side(small_data, tmp_path, make)
    assert_same_hooks(seen_keras, seen_trainer)
    for side in ("keras", "trainer"):
        assert sorted(p.name for p in (tmp_path / side).iterdir()) == [
            "m1.keras", "m2.keras", "m3.keras"]
    assert keras.saving.load_model(tmp_path / "trainer" / "m3.keras").output_shape == (None, 10)


def test_orbax_checkpoint_saves_every_epoch(small_data, tmp_path):
    """Keras' Orbax checkpoint needs the `orbax-checkpoint` package, which digits does not
    install (it brings JAX): compared where it is installed."""
    pytest.importorskip("orbax.checkpoint", reason="OrbaxCheckpoint needs orbax-checkpoint")
    seen_keras, seen_trainer, *_ = side_by_side(
        small_data, tmp_path, lambda where: keras.callbacks.OrbaxCheckpoint(str(where),
                                                                             max_to_keep=5))
    assert_same_hooks(seen_keras, seen_trainer)
    for side in ("keras", "trainer"):
        assert len(list((tmp_path / side).iterdir())) == EPOCHS


def test_backup_and_restore_cleans_up_after_a_whole_run(small_data, tmp_path):
    seen_keras, seen_trainer, *_ = side_by_side(
        small_data, tmp_path, lambda where: keras.callbacks.BackupAndRestore(str(where)))
    assert_same_hooks(seen_keras, seen_trainer)
    assert not (tmp_path / "keras").exists() and not (tmp_path / "trainer").exists()


def test_progbar_logger_prints_each_epoch(small_data, tmp_path, capsys):
    """Keras' ProgbarLogger follows `fit`'s verbosity, and the Trainer's `fit` is quiet: one
    the user passed prints all the same, as in `model.fit(verbose=1)`."""
    seen_keras, seen_trainer, *_ = side_by_side(small_data, tmp_path,
                                                lambda _: keras.callbacks.ProgbarLogger(),
                                                verbose=1)
    assert_same_hooks(seen_keras, seen_trainer)
    out = capsys.readouterr().out
    assert out.count(f"Epoch {EPOCHS}/{EPOCHS}") == 2


def test_tensorboard_writes_train_and_validation_events(small_data, tmp_path):
    seen_keras, seen_trainer, *_ = side_by_side(
        small_data, tmp_path, lambda where: keras.callbacks.TensorBoard(str(where)))
    assert_same_hooks(seen_keras, seen_trainer)
    for side in ("keras", "trainer"):
        for split in ("train", "validation"):
            assert list((tmp_path / side / split).glob("events.out.tfevents.*")), (side, split)


def test_terminate_on_nan_stops_in_the_first_epoch(small_data, tmp_path):
    seen_keras, seen_trainer, theirs, ours = side_by_side(
        small_data, tmp_path, lambda _: keras.callbacks.TerminateOnNaN(), poison=True)
    assert_same_hooks(seen_keras, seen_trainer)
    assert [h for h, _, _ in seen_trainer] == ["on_train_batch_end"]  # it stops after batch 1
    assert ours.model.stop_training and theirs.model.stop_training


def test_remote_monitor_posts_every_epoch(small_data, tmp_path):
    pytest.importorskip("requests")
    posted = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posted.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        root = f"http://127.0.0.1:{server.server_address[1]}"
        seen_keras, seen_trainer, *_ = side_by_side(
            small_data, tmp_path, lambda _: keras.callbacks.RemoteMonitor(root=root))
    finally:
        server.shutdown()
    assert_same_hooks(seen_keras, seen_trainer)
    assert len(posted) == 2 * EPOCHS
    keras_keys = set(json.loads(_form_data(posted[0])))
    assert keras_keys <= set(json.loads(_form_data(posted[EPOCHS])))


def _form_data(body: bytes) -> str:
    from urllib.parse import parse_qs

    return parse_qs(body.decode())["data"][0]


def test_swap_ema_weights_is_refused_for_the_trainers_own_averaging(small_data, tmp_path):
    from digits.engine.trainer import Trainer
    from digits.errors import ConfigError

    trainer = Trainer(max_epochs=1, callbacks=[keras.callbacks.SwapEMAWeights()],
                      log_dir=tmp_path, verbose=False)
    with pytest.raises(ConfigError, match=r"use ema_decay \(--ema DECAY\)"):
        trainer.fit(tiny_model(), small_data)
    assert not (tmp_path / "sequential").exists()


def test_every_public_keras_callback_is_covered_here():
    covered = {"BackupAndRestore", "CSVLogger", "EarlyStopping", "LambdaCallback",
               "LearningRateScheduler", "ModelCheckpoint", "OrbaxCheckpoint", "ProgbarLogger",
               "ReduceLROnPlateau", "RemoteMonitor", "SwapEMAWeights", "TensorBoard",
               "TerminateOnNaN"}
    public = {name for name in dir(keras.callbacks) if isinstance(getattr(keras.callbacks, name), type)
              and issubclass(getattr(keras.callbacks, name), keras.callbacks.Callback)}
    # The base class and the list that runs them are not callbacks to compare; History is what
    # `fit` returns (the Trainer's is the same object Keras builds).
    assert public - covered == {"Callback", "CallbackList", "History"}


def test_a_digits_callback_in_a_plain_model_fit_does_what_its_keras_hooks_say(small_data):
    """The other direction: Keras' hooks fire as Keras calls them (its end of an evaluation
    pass arrives as `on_evaluate_end`), the Trainer-level hooks simply do not."""
    from digits.callbacks import Callback

    class Seen(Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(("epoch", epoch))

        def on_evaluate_end(self, logs=None):
            self.seen.append(("evaluated", sorted(logs)))

        def on_test_end(self, trainer, result):
            self.seen.append(("tested", result))

        def on_fit_start(self, trainer):
            self.seen.append(("fit", trainer))

    callback = Seen()
    keras_fit(small_data, callback)
    assert [s for s in callback.seen if s[0] == "epoch"] == [("epoch", e) for e in range(EPOCHS)]
    assert [s for s in callback.seen if s[0] == "evaluated"] == [
        ("evaluated", ["accuracy", "loss"])] * EPOCHS
    assert not [s for s in callback.seen if s[0] in ("tested", "fit")]


def test_a_digits_callback_that_needs_the_trainer_says_so_in_a_plain_model_fit(small_data):
    from digits.callbacks.checkpoint import Checkpoint
    from digits.callbacks.early_stopping import EarlyStopping

    with pytest.raises(TypeError, match=r"Checkpoint is a digits callback that needs the "
                                        r"Trainer: pass it to digits.Trainer\(callbacks"):
        keras_fit(small_data, Checkpoint())
    stop = EarlyStopping(monitor="loss", patience=0, min_delta=10.0)  # works without one
    keras_fit(small_data, stop)
    assert stop.stopped_epoch == 2  # 1-based, as digits' EarlyStopping counts
