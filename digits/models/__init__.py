"""Models: functions from hyperparameters to an uncompiled `keras.Model`. No training here.

Every model takes (28, 28, 1) float images in [0, 1] and outputs class probabilities (a float32
softmax, also under a mixed-precision policy). The tuner's search space builds through
`build_model` too, so a searched model and a hand-picked one are the same kind of object.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from digits.errors import ConfigError, ModelError

MODELS: dict[str, Callable] = {}


def _register(name: str):
    def wrap(fn):
        MODELS[name] = fn
        return fn

    return wrap


def _augmentation(layers, strength: float, seed: int | None):
    """Small shifts, rotations and zooms, filling with black (reflect paints ghost strokes)."""
    if strength <= 0:
        return []
    return [
        layers.RandomRotation(0.03 * strength, fill_mode="constant", seed=seed),
        layers.RandomTranslation(0.1 * strength, 0.1 * strength, fill_mode="constant", seed=seed),
        layers.RandomZoom(0.1 * strength, fill_mode="constant", seed=seed),
    ]


def _head(layers, x, num_classes: int):
    x = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


@_register("cnn")
def cnn(
    conv_blocks: int = 3,
    filters: int = 32,
    kernel_size: int = 3,
    convs_per_block: int = 2,
    separable: bool = False,
    batch_norm: bool = True,
    dropout: float = 0.0,
    dense_units: int = 256,
    dense_dropout: float = 0.4,
    augment: float = 0.5,
    ink_augment: float = 1.0,
    elastic: float = 0.0,
    num_classes: int = 10,
    seed: int | None = None,
):
    """The default: conv blocks (Conv-BN-ReLU x2, MaxPool), a dense head, augmentation.

    The defaults are what the default architecture search chose on validation (three blocks of
    32/64/128 filters, no dropout after the blocks, a 256-unit head, augmentation 0.5); on the
    embedded digits they read the official test set 99.42-99.43% against 99.06-99.21% for the
    earlier two-block default (BENCHMARKS.md, "Training recipes").

    Args:
        conv_blocks: number of conv blocks, 1-3; filters double with each block.
        filters: filters of the first block.
        kernel_size: 3 or 5.
        convs_per_block: convolutions before each pooling.
        separable: depthwise-separable convolutions (`SeparableConv2D`) for every convolution
            but the first, which sees one channel: fewer weights and less work per image.
        batch_norm: BatchNormalization after every conv and the dense layer.
        dropout: dropout after each block.
        dense_units: width of the dense layer.
        dense_dropout: dropout before the output layer.
        augment: augmentation strength (0 turns it off; 1 = +-11 degrees, +-10% shift and zoom).
        ink_augment: strength of `digits.models.layers.InkVariation` (stroke width, blur, contrast;
            0 turns it off).
        elastic: strength of `digits.models.layers.ElasticDistortion` (1 = Simard et al.'s alpha 34,
            sigma 4; 0 turns it off).
    """
    import keras
    from keras import layers

    _check_range("conv_blocks", conv_blocks, 1, 3)
    _check_range("filters", filters, 1, 512)
    _check_range("kernel_size", kernel_size, 1, 7)
    _check_range("convs_per_block", convs_per_block, 1, 3)
    _check_range("dropout", dropout, 0.0, 0.9)
    _check_range("dense_units", dense_units, 1, 4096)
    _check_range("dense_dropout", dense_dropout, 0.0, 0.9)
    _check_range("augment", augment, 0.0, 3.0)
    _check_range("ink_augment", ink_augment, 0.0, 3.0)
    _check_range("elastic", elastic, 0.0, 3.0)
    for name, value in (("batch_norm", batch_norm), ("separable", separable)):
        if not isinstance(value, bool):
            raise ModelError(f"{name} must be true or false, got {value!r}")

    inputs = keras.Input((28, 28, 1), name="image")
    x = inputs
    if ink_augment > 0:
        from digits.models.layers import InkVariation

        x = InkVariation(ink_augment, seed=seed, name="ink_variation")(x)
    if elastic > 0:
        from digits.models.layers import ElasticDistortion

        x = ElasticDistortion(34.0 * elastic, seed=seed, name="elastic_distortion")(x)
    for layer in _augmentation(layers, augment, seed):
        x = layer(x)
    for block in range(conv_blocks):
        width = filters * 2**block
        for conv in range(convs_per_block):
            kind = layers.SeparableConv2D if separable and (block or conv) else layers.Conv2D
            x = kind(width, kernel_size, padding="same", use_bias=not batch_norm)(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
        if dropout:
            x = layers.Dropout(dropout, seed=seed)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, use_bias=not batch_norm)(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.Activation("relu")(x)
    if dense_dropout:
        x = layers.Dropout(dense_dropout, seed=seed)(x)
    return keras.Model(inputs, _head(layers, x, num_classes), name="cnn")


@_register("seed-cnn")
def seed_cnn(num_classes: int = 10, seed: int | None = None):
    """The notebook's CNN: Conv32-Conv64-MaxPool-Dropout-Dense128-Dropout-Dense10 (the baseline)."""
    import keras
    from keras import layers

    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25, seed=seed)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5, seed=seed)(x)
    return keras.Model(inputs, _head(layers, x, num_classes), name="seed_cnn")


@_register("mlp")
def mlp(hidden_units: int = 256, hidden_layers: int = 2, dropout: float = 0.2,
        num_classes: int = 10, seed: int | None = None):
    """A multilayer perceptron on the flattened pixels: a fast, weak reference."""
    import keras
    from keras import layers

    _check_range("hidden_units", hidden_units, 1, 8192)
    _check_range("hidden_layers", hidden_layers, 1, 8)
    _check_range("dropout", dropout, 0.0, 0.9)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Flatten()(inputs)
    for _ in range(hidden_layers):
        x = layers.Dense(hidden_units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout, seed=seed)(x)
    return keras.Model(inputs, _head(layers, x, num_classes), name="mlp")


def _check_range(name: str, value, lo, hi) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ModelError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    if isinstance(lo, int) and isinstance(hi, int) and not float(value).is_integer():
        raise ModelError(f"{name} must be a whole number, got {value!r}")


def model_hyperparameters(name: str) -> dict:
    """The hyperparameters `build_model(name, ...)` accepts, with their defaults."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in ("num_classes", "seed")}


def build_model(name: str = "cnn", **hyperparameters):
    """Build an uncompiled model by name.

    Example:
        >>> model = build_model("cnn", conv_blocks=3, filters=16)
        >>> model.output_shape
        (None, 10)
    """
    accepted = model_hyperparameters(name)
    unknown = set(hyperparameters) - set(accepted) - {"num_classes", "seed"}
    if unknown:
        raise ModelError(
            f"model {name!r} has no hyperparameter {', '.join(sorted(unknown))}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        )
    for key in ("conv_blocks", "filters", "kernel_size", "convs_per_block", "dense_units",
                "hidden_units", "hidden_layers"):
        if key in hyperparameters and isinstance(hyperparameters[key], float) \
                and hyperparameters[key].is_integer() and abs(hyperparameters[key]) < 2**31:
            hyperparameters[key] = int(hyperparameters[key])
    try:
        return MODELS[name](**hyperparameters)
    except ModelError:
        raise
    except (ValueError, TypeError) as e:
        raise ModelError(f"cannot build model {name!r}: {e}") from None


def load_model(path: str):
    """Load a saved `.keras` model with Keras safe mode on, for inference.

    A model that needs arbitrary code to load (a Lambda layer, a pickled function) is refused,
    never executed. The model must take 28x28x1 images and output one score per class.
    """
    check_model_file(path)
    import keras

    import digits.models.layers  # noqa: F401 - registers digits' own layers for safe-mode loading

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - every load failure is the file's fault
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise ModelError(
                f"{path}: refused: the model needs arbitrary code to load (e.g. a Lambda layer) "
                "and Keras safe mode is on"
            ) from None
        unknown = re.search(r"Could not locate class '([^']+)'", str(e))
        # Only a class registered by the user's code (Keras names it "package>Class"), never
        # what a hostile config names (`os.system`), is met with the --model-module hint.
        if unknown and re.search(r"'registered_name': '[^']*>", str(e)):
            raise ModelError(
                f"{path}: the model's class {unknown.group(1)} is one this process does not "
                "know: give the module that defines and registers it with --model-module "
                "MODULE (a dotted name or a .py file)") from None
        raise ModelError(f"{path}: cannot load model: {message[:300]}") from None
    from digits.speed.precision import for_this_machine

    model = for_this_machine(model)  # bfloat16 computing only where the CPU has it natively
    import numpy as np

    try:
        shapes = model_shapes(model, np.zeros((1, 28, 28, 1), np.float32))
    except ConfigError:
        shapes = None
    if shapes is None:
        raise ModelError(f"{path}: the model has no single image input and output") from None
    input_shape, output_shape = shapes
    if input_shape not in ((28, 28, 1), (28, 28)) or output_shape != (10,):
        raise ModelError(
            f"{path}: the model takes {input_shape} and gives {output_shape}; expected 28x28x1 "
            "images in and 10 class scores out"
        )
    if _saved_with_logits(path):
        # Trained on logits (its saved loss says from_logits): read, served and exported as
        # probabilities like every other model, by a softmax on its output.
        inputs = keras.Input(input_shape, name="image")
        outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
            model(inputs, training=False))
        model = keras.Model(inputs, outputs, name=model.name)
    return model


def _saved_with_logits(path: str) -> bool:
    """Whether the loss a saved model was compiled with says `from_logits` (its output is logits)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    loss = (config.get("compile_config") or {}).get("loss") if isinstance(config, dict) else None
    return isinstance(loss, dict) and (loss.get("config") or {}).get("from_logits") is True


# A .keras archive larger than this once unpacked is refused before Keras opens it.
MAX_MODEL_BYTES = 2 * 1024**3


def check_model_file(path: str) -> None:
    """Refuse, without importing Keras, a path that cannot be a saved Keras 3 model: missing,
    not a file, not named .keras, or not a .keras archive (`load_model` checks it first)."""
    import os

    if not os.path.exists(path):
        raise ModelError(f"{path}: no such model file")
    if not os.path.isfile(path):
        raise ModelError(f"{path}: not a file")
    if not str(path).endswith(".keras"):
        raise ModelError(f"{path}: expected a .keras model file")
    _check_keras_archive(path)


def _check_keras_archive(path: str) -> None:
    """Refuse, without importing Keras, a file that cannot be a saved Keras 3 model."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ModelError(f"{path}: not a Keras model file (not a .keras zip archive)") from None
    missing = [name for name in ("config.json", "metadata.json") if name not in members]
    if missing:
        raise ModelError(f"{path}: not a Keras model file (a zip archive without "
                         f"{' and '.join(missing)})")
    total = sum(info.file_size for info in members.values())
    if total > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: the archive unpacks to {total} bytes, too large")


def model_shapes(model, sample=None) -> tuple[tuple, tuple] | None:
    """(input shape, output shape) of `model` without the batch axis. A model without static
    shapes (a `keras.Model` subclass, a Sequential without an `Input`) is called once on
    `sample` (one image), which builds it; None when it has none and no sample is given."""
    try:
        return tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    except (AttributeError, ValueError, TypeError):
        if sample is None:
            return None
    import keras

    try:
        outputs = model(sample, training=False)
    except Exception as e:  # noqa: BLE001 - the user's model code: said in one line
        reason = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"the model fails on one {'x'.join(map(str, sample.shape[1:]))} image: "
                          f"{type(e).__name__}: {reason[:300]}") from None
    if isinstance(outputs, (list, tuple, dict)):
        raise ConfigError("the model returns several outputs; digits trains models with one "
                          "output of class scores")
    return tuple(sample.shape[1:]), tuple(keras.ops.shape(outputs)[1:])


def check_model_fits_data(model, data) -> None:
    """Refuse a model whose input or output cannot match the dataset, before any run starts
    (a subclassed model is built by one call on one image for that)."""
    split = data.train if data.train is not None and len(data.train) else data.test
    shapes = model_shapes(model, split.x[:1] if split is not None and len(split) else None)
    if shapes is None:
        return
    inputs, outputs = shapes
    if inputs not in ((28, 28, 1), (28, 28)):
        raise ConfigError(f"the model takes inputs of shape {inputs}; the images are 28x28x1")
    classes = len(data.class_names)
    if outputs != (classes,):
        raise ConfigError(f"the model outputs shape {outputs}; the dataset has {classes} classes")
