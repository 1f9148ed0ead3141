"""Knowledge distillation (`--distill-from MODEL.keras`, `Trainer(distill_from=...)`): train a
model against a trained teacher's predictions as well as the labels.

A small model learns more from where a large one puts its probability than from the labels
alone (Hinton, Vinyals and Dean 2015): a 7 that the teacher finds close to a 1 says something a
one-hot label does not. Each training batch's loss becomes

    (1 - weight) x the compiled loss (cross-entropy on the labels)
    + weight x temperature^2 x KL(teacher || model), both softened by the temperature,

the teacher reading the batch's images as they come from the data (the model's own augmentation
layers act inside it), in inference mode, its weights frozen. Validation, the checkpoint's
"best by validation loss", the test and every report keep the compiled loss on the labels
alone; the training loss in the logs is the mixed one. The model saved is the model trained,
nothing of the teacher in it.

The `Distill` callback puts the mixed loss on the model (an instance's `compute_loss`, which
Keras' training step calls with the batch's images) before the training step is traced, and
takes it off when the fit ends.
"""

from __future__ import annotations

from digits.callbacks.base import Callback
from digits.errors import ConfigError, ModelError


class Distill(Callback):
    """Train against a teacher model's softened predictions as well as the labels.

    Args:
        teacher: a saved `.keras` model (loaded with Keras safe mode on, as `digits.predict`
            loads one) or a `keras.Model`, taking the same images and giving one probability per
            class of the same classes.
        weight: the share of the teacher's term in the loss, in (0, 1].
        temperature: the softening of both distributions (1 = none); the teacher's term is
            multiplied by its square so that its gradients keep their scale.

    Example:
        >>> trainer = Trainer(distill_from="logs/cnn/version_0/model.keras")
        >>> trainer.fit(build_model("cnn", filters=16, dense_units=64), data)
    """

    order = 1  # acts on the model only; before the reports, for tidiness

    def __init__(self, teacher, weight: float = 0.5, temperature: float = 4.0) -> None:
        super().__init__()
        if not (isinstance(weight, (int, float)) and 0 < weight <= 1):
            raise ConfigError(f"distillation weight must be in (0, 1], got {weight!r}")
        if not (isinstance(temperature, (int, float)) and 0 < temperature <= 100):
            raise ConfigError(f"distillation temperature must be in (0, 100], got {temperature!r}")
        self.teacher = teacher
        self.weight = float(weight)
        self.temperature = float(temperature)
        self._model = None

    def setup(self, trainer, stage: str) -> None:
        if stage != "fit":
            return
        from digits.models import check_model_fits_data

        teacher = self._load_teacher()
        try:
            check_model_fits_data(teacher, trainer.data)
        except ConfigError as e:
            raise ConfigError(f"--distill-from: the teacher: {e}") from None
        self.teacher = teacher
        self._install(trainer.model)

    def _load_teacher(self):
        if not isinstance(self.teacher, str):
            self.teacher.trainable = False
            return self.teacher
        from digits.models import load_model

        try:
            teacher = load_model(self.teacher)
        except ModelError as e:
            raise ConfigError(f"--distill-from: {e}") from None
        teacher.trainable = False
        return teacher

    def _install(self, model) -> None:
        from keras import ops

        from digits.engine.compiling import outputs_logits

        teacher, weight, t = self.teacher, self.weight, self.temperature
        compiled = type(model).compute_loss.__get__(model)
        logits = outputs_logits(model)

        def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss = compiled(x, y, y_pred, sample_weight, training=training)
            if not training:
                return loss
            taught = ops.log(ops.clip(ops.cast(teacher(x, training=False), "float32"),
                                      1e-7, 1.0))
            scores = ops.cast(y_pred, "float32")
            if not logits:
                scores = ops.log(ops.clip(scores, 1e-7, 1.0))
            target = ops.softmax(taught / t, axis=-1)
            kl = ops.sum(target * (ops.log_softmax(taught / t, axis=-1)
                                   - ops.log_softmax(scores / t, axis=-1)), axis=-1)
            soft = ops.mean(kl) * (t * t)
            return (1.0 - weight) * loss + weight * ops.cast(soft, loss.dtype)

        model.compute_loss = compute_loss
        model.train_function = None  # traced again, with the teacher's term
        self._model = model

    def teardown(self, trainer, stage: str) -> None:
        if stage == "fit" and self._model is not None:
            self._model.__dict__.pop("compute_loss", None)
            self._model.train_function = None
            self._model = None
