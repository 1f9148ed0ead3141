"""A run trained with the TensorBoard callbacks, read back with TensorBoard's own reader and server.

The story: train 2 epochs on a slice of the embedded digits with the tensorboard,
confusion_matrix, classification_report, misclassified and plots callbacks, test, then open
the run directory the way a user would: TensorBoard's EventAccumulator, the TensorBoard HTTP
server (started with scripts/tensorboard.py), and the files beside the event files.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from callbacks.base import Callback
from callbacks.classification_report import ClassificationReport
from callbacks.confusion_matrix import ConfusionMatrixImages
from callbacks.misclassified import MisclassifiedImages
from callbacks.plots import Plots
from callbacks.tensorboard import TensorBoardScalars
from digits.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "scripts" / "tensorboard.py"
EPOCHS = 2

pytestmark = pytest.mark.slow


def _load_launcher():
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_tensorboard_launcher", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_data):
    """One trained and tested run with all five TensorBoard/file callbacks."""
    log_dir = tmp_path_factory.mktemp("logs")
    trainer = Trainer(
        max_epochs=EPOCHS, log_dir=log_dir, name="story", limit_train_batches=3, verbose=False,
        enable_checkpointing=False,
        callbacks=[TensorBoardScalars(), ConfusionMatrixImages(), ClassificationReport(),
                   MisclassifiedImages(count=16), Plots()],
    )
    model = trainer.build_model("mlp", hidden_units=64)
    trainer.fit(model, small_data)
    result = trainer.test(model, small_data)
    return types.SimpleNamespace(trainer=trainer, model=model, result=result, data=small_data,
                                 path=trainer.run.path, log_dir=log_dir)


def read(directory: Path) -> event_accumulator.EventAccumulator:
    """TensorBoard's own reader over one split directory, keeping every event."""
    guidance = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance=guidance)
    accumulator.Reload()
    return accumulator


def series(accumulator, tag: str, plugin: str) -> dict[int, object]:
    """step -> value of a tf.summary tag (TF2 writes every summary as a tensor)."""
    assert accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin
    return {e.step: tensor_util.make_ndarray(e.tensor_proto) for e in accumulator.Tensors(tag)}


def decode_image(value) -> Image.Image:
    width, height, png = value
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (int(width), int(height))
    image.load()
    return image


def test_every_epoch_has_its_scalars_in_train_and_validation(run):
    train = read(run.path / "train")
    validation = read(run.path / "validation")
    history = run.trainer.history
    steps = list(range(EPOCHS))

    for tag, key in (("epoch_loss", "loss"), ("epoch_accuracy", "accuracy")):
        values = series(train, tag, "scalars")
        assert sorted(values) == steps
        assert [float(values[s]) for s in steps] == pytest.approx(history[key], rel=1e-5)
        values = series(validation, tag, "scalars")
        assert sorted(values) == steps
        assert [float(values[s]) for s in steps] == pytest.approx(history[f"val_{key}"], rel=1e-5)

    rates = series(train, "epoch_learning_rate", "scalars")
    assert sorted(rates) == steps
    assert 0 < float(rates[1]) < float(rates[0]) <= run.trainer.learning_rate  # cosine decay
    seconds = series(train, "epoch_time_seconds", "scalars")
    speed = series(train, "epoch_images_per_second", "scalars")
    assert sorted(seconds) == sorted(speed) == steps
    assert all(float(v) > 0 for v in [*seconds.values(), *speed.values()])
    # Validation holds only validation metrics; train only training ones.
    assert not set(validation.Tags()["tensors"]) & {"epoch_learning_rate", "epoch_time_seconds"}


def test_one_event_file_per_split_however_many_callbacks_write_there(run):
    for split in ("train", "validation", "test"):
        events = list((run.path / split).glob("events.out.tfevents.*"))
        assert len(events) == 1, f"{split}: {events}"


def test_validation_confusion_matrix_image_every_epoch(run):
    images = series(read(run.path / "validation"), "confusion_matrix", "images")
    assert sorted(images) == list(range(EPOCHS))
    for value in images.values():
        image = decode_image(value)
        assert image.height >= 400 and image.width > image.height  # two panels side by side


def test_test_confusion_matrix_and_misclassified_images(run):
    test = read(run.path / "test")
    last_epoch = EPOCHS - 1
    matrix = series(test, "test/confusion_matrix", "images")
    assert list(matrix) == [last_epoch]
    assert decode_image(matrix[last_epoch]).height >= 400
    errors = series(test, "test/misclassified", "images")
    assert list(errors) == [last_epoch]
    assert decode_image(errors[last_epoch]).height >= 400
    assert (run.result.y_pred != run.result.y_true).sum() >= 16  # so the grid holds 16 tiles


def test_classification_reports_as_text(run):
    validation = series(read(run.path / "validation"), "classification_report", "text")
    assert sorted(validation) == list(range(EPOCHS))
    last = validation[EPOCHS - 1].item().decode()
    # Derived from the matrix Keras' validation pass collected, it matches a real prediction
    # pass over the same images to the last printed digit.
    predicted = run.trainer.validate(run.model, run.data)
    table = predicted.report_markdown().split("\n\n")[0]
    assert last.startswith(table)
    assert f"on {len(run.data.val)} examples, epoch {EPOCHS}" in last

    test = series(read(run.path / "test"), "test/classification_report", "text")
    assert test[EPOCHS - 1].item().decode() == run.result.report_markdown()
    text = (run.path / "classification_report.txt").read_text()
    assert text == run.result.report_text() + "\n"
    assert "precision" in text and "weighted avg" in text


def test_files_beside_the_event_files_decode(run):
    for name, min_height in (("loss.png", 300), ("accuracy.png", 300),
                             ("confusion_matrix.png", 400), ("misclassified.png", 400)):
        image = Image.open(run.path / name)
        assert image.format == "PNG", name
        assert image.height >= min_height, name
        image.load()
    assert not list(run.path.glob(".*.tmp*")), "an atomic write left its temporary file"


def test_heavy_callbacks_are_left_out_of_a_fast_dev_run():
    trainer = Trainer(fast_dev_run=True, verbose=False, enable_checkpointing=False, callbacks=[
        TensorBoardScalars(), ConfusionMatrixImages(), ClassificationReport(),
        MisclassifiedImages(), Plots()])
    assert [type(c).__name__ for c in trainer.callbacks] == ["TensorBoardScalars",
                                                             "ClassificationReport"]


def test_a_model_compiled_by_the_user_gets_one_fallback_prediction_pass(tmp_path, small_data):
    import keras

    trainer = Trainer(max_epochs=1, log_dir=tmp_path, name="own", limit_train_batches=2,
                      verbose=False, enable_checkpointing=False,
                      callbacks=[ConfusionMatrixImages(), ClassificationReport()])
    model = trainer.build_model("mlp", hidden_units=32)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    passes = []
    predict = trainer.predict
    trainer.predict = lambda m, x: passes.append(len(x)) or predict(m, x)
    trainer.fit(model, small_data)

    assert trainer.validation_confusion_matrix().sum() == len(small_data.val)
    assert passes == [len(small_data.val)]  # one pass, shared by both callbacks and this
    validation = read(trainer.run.path / "validation")
    assert decode_image(series(validation, "confusion_matrix", "images")[0]).height >= 400
    report = series(validation, "classification_report", "text")[0].item().decode()
    assert "| weighted avg |" in report and f"| {len(small_data.val)} |" in report


def test_a_run_stopped_between_due_epochs_still_shows_its_final_matrix(tmp_path, small_data):
    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    trainer = Trainer(max_epochs=4, log_dir=tmp_path, name="stopped", limit_train_batches=2,
                      verbose=False, enable_checkpointing=False,
                      callbacks=[TensorBoardScalars(), ConfusionMatrixImages(every_n_epochs=2),
                                 ClassificationReport(every_n_epochs=2), StopAfterFirstEpoch()])
    trainer.fit(trainer.build_model("mlp", hidden_units=32), small_data)

    assert trainer.current_epoch == 1  # epoch index 0 was not due (every 2nd epoch)
    validation = read(trainer.run.path / "validation")
    assert list(series(validation, "confusion_matrix", "images")) == [0]
    assert list(series(validation, "classification_report", "text")) == [0]
    assert len(list((trainer.run.path / "validation").glob("events.out.tfevents.*"))) == 1


def test_tensorboard_serves_the_scalar_image_and_text_tags(run):
    launcher = _load_launcher()
    port = launcher.free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, str(LAUNCHER), str(run.path), "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        tags = launcher.wait_for_tags(base, ("scalars", "images", "text"), timeout=120,
                                      process=server)
        assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_time_seconds",
                "epoch_images_per_second"} <= set(tags["scalars"]["train"])
        assert {"epoch_loss", "epoch_accuracy"} <= set(tags["scalars"]["validation"])
        assert "confusion_matrix" in tags["images"]["validation"]
        assert {"test/confusion_matrix", "test/misclassified"} <= set(tags["images"]["test"])
        assert "classification_report" in tags["text"]["validation"]
        assert "test/classification_report" in tags["text"]["test"]

        points = launcher.get_json(f"{base}/data/plugin/scalars/scalars?run=validation"
                                   "&tag=epoch_accuracy")
        assert [p[1] for p in points] == list(range(EPOCHS))
        images = launcher.get_json(f"{base}/data/plugin/images/images?run=validation"
                                   "&tag=confusion_matrix&sample=0")
        assert [i["step"] for i in images] == list(range(EPOCHS))
        with urllib.request.urlopen(
                f"{base}/data/plugin/images/individualImage?{images[-1]['query']}",
                timeout=10) as response:
            served = Image.open(io.BytesIO(response.read()))
            assert served.format == "PNG" and served.height >= 400
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def test_launcher_help_does_not_import_tensorflow():
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(LAUNCHER)!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(LAUNCHER)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('TF', 'tensorflow' in sys.modules, 'tensorboard' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "127.0.0.1" in done.stdout and "--host" in done.stdout
    assert done.stdout.strip().endswith("TF False False")


def test_launcher_refuses_a_missing_log_directory(tmp_path):
    done = subprocess.run([sys.executable, str(LAUNCHER), str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a directory" in done.stderr
