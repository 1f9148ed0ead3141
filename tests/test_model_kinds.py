"""Every kind of Keras model through the Trainer: subclassed (built or not), with its own
`train_step` or `compute_loss`, compiled by the user, outputting logits. Each trains, resumes,
tests and predicts probabilities (rows summing to 1), and the user's own steps are the ones run.
Tiny models, a few batches."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import digits


class Small(keras.Model):
    """A three-layer subclass, as Keras' guide writes one."""

    def __init__(self, logits: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.flat = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(10, activation=None if logits else "softmax")

    def call(self, x, training=False):
        return self.out(self.hidden(self.flat(x)))


class CountedSteps(Small):
    """Overrides `train_step` (calling Keras' own) and counts the steps it ran."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps = keras.Variable(0, dtype="int32", trainable=False)

    def train_step(self, data):
        self.steps.assign_add(1)
        return super().train_step(data)


class PenalisedLoss(Small):
    """Its own `compute_loss`: the cross-entropy plus a penalty on the hidden weights."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = keras.Variable(0, dtype="int32", trainable=False)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        self.calls.assign_add(1)
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        return loss + 1e-3 * keras.ops.sum(keras.ops.square(self.hidden.kernel))


@keras.saving.register_keras_serializable(package="digits_tests")
class Registered(Small):
    def get_config(self):
        return super().get_config()


def fit_test_predict(model, data, tmp_path, **options):
    trainer = digits.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1,
                             log_dir=tmp_path, callbacks=[], **options)
    trainer.fit(model, data)
    result = trainer.test(model, data)
    probabilities = trainer.predict(model, data.test.x[:8])
    assert probabilities.shape == (8, 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4) and (probabilities >= 0).all()
    assert 0.0 <= result.accuracy <= 1.0 and trainer.current_epoch == 2
    return trainer


@pytest.mark.parametrize("built", [False, True])
def test_a_subclassed_model_trains_tests_and_predicts(small_data, tmp_path, built):
    model = Small()
    if built:
        model(small_data.train.x[:1])
    trainer = fit_test_predict(model, small_data, tmp_path, verbose=False)
    assert trainer.history["val_loss"]


def test_a_custom_train_step_and_compute_loss_are_the_ones_run(small_data, tmp_path):
    steps, penalised = CountedSteps(), PenalisedLoss()
    fit_test_predict(steps, small_data, tmp_path / "a", verbose=False, steps_per_execution=1)
    assert int(steps.steps.numpy()) == 2 * 4
    fit_test_predict(penalised, small_data, tmp_path / "b", verbose=False)
    assert int(penalised.calls.numpy()) > 0


def test_a_logits_model_the_user_compiled_reads_as_probabilities(small_data, tmp_path):
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))  # logits
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.SGD(0.05)
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fit_test_predict(model, small_data, tmp_path, verbose=False)
    assert model.optimizer is optimizer  # the user's choices kept


def test_an_uncompiled_logits_subclass_that_says_so_trains_on_logits(small_data, tmp_path):
    model = Small(logits=True)
    model.outputs_logits = True
    fit_test_predict(model, small_data, tmp_path, verbose=False)
    assert model.loss.from_logits


def test_a_subclass_resumes_from_its_saved_epoch(small_data, tmp_path):
    from digits.callbacks import Callback

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    first = digits.Trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=1,
                           log_dir=tmp_path, callbacks=[StopAfterFirstEpoch()], verbose=False,
                           resume=True)
    with pytest.raises(KeyboardInterrupt):
        first.fit(Small(name="small"), small_data)  # named as a new process would name it
    again = digits.Trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=1,
                           log_dir=tmp_path, callbacks=[], verbose=False, resume=True)
    again.fit(Small(name="small"), small_data)
    assert again.resumed_from_epoch == 1 and again.current_epoch == 3
    assert again.run.path == first.run.path


def test_saving_a_subclass_registered_or_not(small_data, tmp_path, capsys):
    fit_test_predict(Registered(), small_data, tmp_path / "registered")
    assert "cannot load from a file" not in capsys.readouterr().err
    saved = next((tmp_path / "registered").glob("*/version_0/model.keras"))
    loaded = digits.models.load_model(str(saved))
    assert loaded(small_data.test.x[:2]).shape == (2, 10)
    fit_test_predict(Small(), small_data, tmp_path / "unregistered")
    err = capsys.readouterr().err
    assert "notice: Small is a keras.Model subclass that Keras cannot load from a file" in err
    assert "@keras.saving.register_keras_serializable()" in err


class OwnEvaluation(Small):
    """Its own `test_step` and `predict_step`, counted."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tested = keras.Variable(0, dtype="int32", trainable=False)
        self.predicted = keras.Variable(0, dtype="int32", trainable=False)

    def test_step(self, data):
        self.tested.assign_add(1)
        return super().test_step(data)

    def predict_step(self, data):
        self.predicted.assign_add(1)
        return super().predict_step(data)


def test_a_custom_test_step_and_predict_step_are_the_ones_run(small_data, tmp_path):
    model = OwnEvaluation()
    fit_test_predict(model, small_data, tmp_path, verbose=False)
    assert int(model.tested.numpy()) >= 2  # each epoch's validation pass
    assert int(model.predicted.numpy()) >= 2  # the test's pass and predict's


def test_a_model_with_the_wrong_number_of_classes_is_one_clear_error(small_data, tmp_path):
    from digits.errors import ConfigError

    class Five(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.flat, self.out = keras.layers.Flatten(), keras.layers.Dense(5, activation="softmax")

        def call(self, x, training=False):
            return self.out(self.flat(x))

    trainer = digits.Trainer(max_epochs=1, log_dir=tmp_path, callbacks=[], verbose=False)
    with pytest.raises(ConfigError, match=r"the model outputs shape \(5,\); the dataset has 10"):
        trainer.fit(Five(), small_data)
    assert not list(tmp_path.iterdir())


def functional_logits() -> keras.Model:
    """A functional model the user compiled on logits."""
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden), name="functional_logits")
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# Each kind as a fresh process would build it (same names, so a resumed run finds its directory).
KINDS = {
    "subclass": lambda: Small(name="small"),
    "registered": lambda: Registered(name="registered"),
    "own_train_step": lambda: CountedSteps(name="counted"),
    "own_compute_loss": lambda: PenalisedLoss(name="penalised"),
    "own_test_and_predict_steps": lambda: OwnEvaluation(name="evaluation"),
    "functional_logits": functional_logits,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_resumes_tests_predicts_and_saves(kind, small_data, tmp_path):
    """Every kind: cut off in its second epoch, resumed in a "new process" to the end, its best
    checkpoint restored for the test, predictions that are probabilities, and the kept
    `model.keras` giving the same answers when the model is loaded again (by the user's class
    where Keras cannot rebuild it from the file)."""
    from digits.callbacks import Callback

    class CutOff(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # the first epoch is saved; the second is cut off
                raise KeyboardInterrupt  # as a Ctrl-C: let through, the run kept

    settings = dict(max_epochs=3, limit_train_batches=4, limit_val_batches=1, log_dir=tmp_path,
                    verbose=False, resume=True)
    with pytest.raises(KeyboardInterrupt):
        digits.Trainer(callbacks=[CutOff()], **settings).fit(KINDS[kind](), small_data)
    model = KINDS[kind]()
    trainer = digits.Trainer(**settings)
    trainer.fit(model, small_data)
    assert trainer.resumed_from_epoch == 1 and trainer.current_epoch == 3
    best = trainer.best_model(model)
    result = trainer.test(best, small_data)
    assert 0.0 <= result.accuracy <= 1.0
    probabilities = trainer.predict(best, small_data.test.x[:8])
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4) and (probabilities >= 0).all()
    saved = trainer.run.path / "model.keras"
    assert saved.is_file()
    if kind in ("registered", "functional_logits"):
        again = digits.models.load_model(str(saved))
    else:
        again = KINDS[kind]()
        again(small_data.test.x[:1])
        again.load_weights(saved)
    assert np.allclose(trainer.predict(again, small_data.test.x[:8]), probabilities, atol=2e-2)


class Sized(keras.Model):
    """A subclass whose width is a hyperparameter, with its own `train_step`."""

    def __init__(self, units: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.flat, self.hidden = keras.layers.Flatten(), keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(10, activation="softmax")
        self.steps = keras.Variable(0, dtype="int32", trainable=False)

    def call(self, x, training=False):
        return self.out(self.hidden(self.flat(x)))

    def train_step(self, data):
        self.steps.assign_add(1)
        return super().train_step(data)


def test_the_tuners_hypermodel_may_build_a_subclass(small_data, tmp_path):
    """A user's own search space, keras-tuner style: `build_model(hp)` returns a subclass; each
    trial trains it through the Trainer (its own train_step run) with the learning rate it
    declared, and the best trial's model is rebuilt and restored by keras-tuner."""
    from digits.tuner.hypermodel import DigitsHyperModel
    from digits.tuner.search import make_tuner

    built = []

    def build(hp):
        hp.Float("learning_rate", 1e-3, 1e-2, sampling="log")
        model = Sized(units=hp.Int("units", 8, 32, step=8), name="sized")
        built.append(model)
        return model

    hypermodel = DigitsHyperModel(build_model=build, callbacks=lambda: [], trainer_options=dict(
        limit_train_batches=3, limit_val_batches=1, verbose=False, steps_per_execution=1))
    tuner = make_tuner("random", hypermodel, directory=str(tmp_path), project="own",
                       max_trials=2, objective="val_accuracy")
    tuner.search(small_data, epochs=2)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert {"units", "learning_rate"} <= set(trials[0].hyperparameters.values)
    # The two trials' models (keras-tuner builds one more first, to learn the space) ran their
    # own train_step on every batch.
    assert [int(m.steps.numpy()) for m in built[-2:]] == [2 * 3] * 2
    runs = sorted(tmp_path.glob("own/trial_*/execution_0/version_0/config.json"))
    assert len(runs) == 2
    best = tuner.get_best_models(1)[0]
    assert isinstance(best, Sized) and best.hidden.units == trials[0].hyperparameters["units"]
    probabilities = best.predict(small_data.test.x[:4], verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
