"""The Trainer: fit, validate, test, predict; the run directory; callback order and failures."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from digits.callbacks.base import Callback
from digits.engine.trainer import RunDirectory, Trainer
from digits.errors import CallbackRaised, ConfigError


class Recorder(Callback):
    """Remembers the hooks it saw, in order."""

    def __init__(self, log, tag, order=50):
        super().__init__()
        self.log, self.tag, self.order = log, tag, order

    def on_fit_start(self, trainer):
        self.log.append((self.tag, "fit_start"))

    def on_epoch_end(self, epoch, logs=None):
        self.log.append((self.tag, "epoch_end", epoch, sorted(logs)))

    def on_fit_end(self, trainer):
        self.log.append((self.tag, "fit_end"))

    def on_test_end(self, trainer, result):
        self.log.append((self.tag, "test_end", result.accuracy))


def test_fit_then_test_writes_a_complete_run_directory(tmp_path, small_data):
    log = []
    trainer = Trainer(max_epochs=2, callbacks=[Recorder(log, "r")], log_dir=tmp_path, name="story",
                      verbose=False)
    model = trainer.build_model("cnn", filters=8)
    trainer.fit(model, small_data)
    result = trainer.test(model, small_data)

    run = tmp_path / "story" / "version_0"
    assert trainer.run.path == run
    assert {"config.json", "metrics.json", "model.keras"} <= {p.name for p in run.iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(metrics["history"][key]) == 2
    test = metrics["test"]
    assert test["accuracy"] == pytest.approx(result.accuracy)
    assert np.array(test["confusion_matrix"]).sum() == len(small_data.test)
    assert set(test["report"]) >= {"0", "9", "macro avg", "weighted avg"}
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "cnn" and config["hyperparameters"] == {"filters": 8}
    assert config["trainer"]["max_epochs"] == 2 and config["data"]["train"] == 512
    assert config["trainer"]["label_smoothing"] == 0.1

    # The test result is everything the notebook's report had, as data.
    assert result.confusion_matrix.shape == (10, 10) and result.confusion_matrix.dtype == np.int64
    assert result.report["3"]["support"] == int((small_data.test.y == 3).sum())
    assert log[0] == ("r", "fit_start") and log[-2] == ("r", "fit_end")
    assert [e[2] for e in log if e[1] == "epoch_end"] == [0, 1]
    assert "val_accuracy" in log[1][3] and log[-1][:2] == ("r", "test_end")


def test_second_run_gets_the_next_version(tmp_path, small_data):
    for expected in (0, 1):
        trainer = Trainer(max_epochs=1, callbacks=[], log_dir=tmp_path, name="again",
                          limit_train_batches=2, verbose=False)
        trainer.fit(trainer.build_model("mlp"), small_data)
        assert trainer.run.version == expected
    assert RunDirectory.versions(tmp_path, "again") == [0, 1]


def test_validation_confusion_matrix_comes_from_the_validation_pass(tmp_path, small_data):
    seen = {}

    class Grab(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = (self.trainer.validation_confusion_matrix(), logs["val_accuracy"])

    trainer = Trainer(max_epochs=2, callbacks=[Grab()], log_dir=tmp_path, verbose=False)
    model = trainer.build_model("mlp")
    trainer.fit(model, small_data)
    matrix, val_accuracy = seen[1]
    assert matrix.sum() == len(small_data.val)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(val_accuracy, abs=1e-6)
    assert np.array_equal(matrix, trainer.validate(model, small_data).confusion_matrix)


def test_callbacks_run_in_order_and_checkpoint_last(tmp_path, small_data):
    log = []
    late, early = Recorder(log, "late", order=80), Recorder(log, "early", order=10)
    trainer = Trainer(max_epochs=1, callbacks=[late, early], log_dir=tmp_path, verbose=False,
                      limit_train_batches=2)
    assert [getattr(c, "tag", type(c).__name__) for c in trainer.callbacks] == ["early", "late",
                                                                                 "Checkpoint"]
    trainer.fit(trainer.build_model("mlp"), small_data)
    assert [e[0] for e in log if e[1] == "fit_start"] == ["early", "late"]


def test_plain_keras_callbacks_work_too(tmp_path, small_data):
    history = keras.callbacks.History()
    trainer = Trainer(max_epochs=2, callbacks=[history], log_dir=tmp_path, verbose=False,
                      limit_train_batches=2)
    trainer.fit(trainer.build_model("mlp"), small_data)
    assert len(history.history["val_loss"]) == 2


def test_a_failing_callback_is_named_with_its_hook(tmp_path, small_data):
    class Broken(Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    failed = []

    class Witness(Callback):
        def on_exception(self, trainer, error):
            failed.append(error)

    trainer = Trainer(max_epochs=2, callbacks=[Broken(), Witness()], log_dir=tmp_path,
                      verbose=False, limit_train_batches=2)
    with pytest.raises(CallbackRaised, match="'Broken' failed in on_epoch_end: RuntimeError: boom"):
        trainer.fit(trainer.build_model("mlp"), small_data)
    assert len(failed) == 1
    metrics = json.loads((trainer.run.path / "metrics.json").read_text())
    assert metrics["status"] == "failed"


def test_fast_dev_run_writes_nothing(tmp_path, small_data):
    trainer = Trainer(fast_dev_run=True, callbacks=[], log_dir=tmp_path / "logs", verbose=False)
    model = trainer.build_model("mlp")
    trainer.fit(model, small_data)
    result = trainer.test(model, small_data)
    assert len(result.y_true) == 2 * trainer.eval_batch_size or len(result.y_true) == 256
    assert not (tmp_path / "logs").exists()


def test_predict_gives_probabilities(tmp_path, small_data):
    trainer = Trainer(max_epochs=1, callbacks=[], log_dir=tmp_path, verbose=False)
    model = trainer.build_model("mlp")
    trainer.fit(model, small_data)
    p = trainer.predict(model, small_data.test.x[:7])
    assert p.shape == (7, 10) and np.allclose(p.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_builds_and_trains_on_cpu(tmp_path, small_data, precision):
    try:
        trainer = Trainer(max_epochs=1, callbacks=[], log_dir=tmp_path, precision=precision,
                          limit_train_batches=2, verbose=False)
        model = trainer.build_model("cnn", filters=4)
        assert model.layers[-2].dtype_policy.name == precision
        assert model.output.dtype == "float32"  # the softmax stays in float32
        trainer.fit(model, small_data)
        assert np.isfinite(trainer.history["loss"][0])
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_mirrored_strategy_runs_on_a_single_cpu(tmp_path, small_data):
    trainer = Trainer(max_epochs=1, callbacks=[], log_dir=tmp_path, strategy="mirrored",
                      limit_train_batches=2, verbose=False)
    model = trainer.build_model("mlp")
    trainer.fit(model, small_data)
    assert trainer.strategy.num_replicas_in_sync == 1
    assert np.isfinite(trainer.history["val_loss"][0])


@pytest.mark.parametrize("kwargs", [
    {"max_epochs": 0}, {"batch_size": -1}, {"precision": "fp8"}, {"strategy": "tpu"},
    {"learning_rate": float("nan")}, {"name": "../escape"}, {"steps_per_execution": 0},
    {"limit_train_batches": 0}, {"seed": -1}, {"max_epochs": True},
    {"label_smoothing": -0.1}, {"label_smoothing": 0.6}, {"label_smoothing": "0.1"},
])
def test_impossible_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        Trainer(**kwargs)


def test_a_file_where_the_log_dir_should_be_is_refused_before_training(tmp_path, small_data):
    from digits.errors import RunDirectoryError

    (tmp_path / "logs").write_text("not a directory")
    trainer = Trainer(max_epochs=1, callbacks=[], log_dir=tmp_path / "logs" / "sub", verbose=False)
    with pytest.raises(RunDirectoryError, match="is a file"):
        trainer.fit(trainer.build_model("mlp"), small_data)


class BreaksAtTest(Callback):
    """Fails in the Trainer's test hook, and again while cleaning up."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def on_test_end(self, trainer, result):
        raise ValueError("cannot report")

    def on_exception(self, trainer, error):
        self.seen.append(("on_exception", type(error).__name__))
        raise RuntimeError("cannot clean up either")

    def teardown(self, trainer, stage):
        self.seen.append(("teardown", stage))


def test_every_stage_goes_through_one_failure_policy(tmp_path, small_data, capsys):
    """test/validate as fit: on_exception heard, its own failure a warning, teardown always."""
    seen = []
    trainer = Trainer(callbacks=[BreaksAtTest(seen)], log_dir=tmp_path, enable_checkpointing=False)
    model = trainer.build_model("mlp", hidden_units=8)
    with pytest.raises(CallbackRaised, match="failed in on_test_end: ValueError: cannot report"):
        trainer.test(model, small_data)
    assert seen == [("on_exception", "CallbackRaised"), ("teardown", "test")]
    assert "warning: BreaksAtTest.on_exception failed: cannot clean up either" in \
        capsys.readouterr().err


def test_the_trainers_docstring_example_runs(tmp_path, monkeypatch):
    import doctest

    monkeypatch.chdir(tmp_path)
    examples = doctest.DocTestFinder().find(Trainer, "Trainer", globs={})[0]
    assert examples.examples, "the Trainer's docstring has an example"
    class PrintsAllowed(doctest.OutputChecker):
        """The console callbacks print; only an example's stated result is compared."""

        def check_output(self, want, got, optionflags):
            return not want or super().check_output(want, got, optionflags)

    runner = doctest.DocTestRunner(checker=PrintsAllowed())
    report = []
    runner.run(examples, out=report.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(report)
    assert (tmp_path / "logs" / "cnn" / "version_0" / "model.keras").is_file()


def test_a_profile_range_past_the_runs_batches_is_refused_before_training(tmp_path, small_data):
    trainer = Trainer(max_epochs=1, limit_train_batches=2, profile_batch=(1, 5), callbacks=[],
                      log_dir=tmp_path, verbose=False)
    with pytest.raises(ConfigError, match="ends past the run's 2 training batches"):
        trainer.fit(trainer.build_model("mlp", hidden_units=8), small_data)
    assert not list(tmp_path.iterdir())  # nothing was started
