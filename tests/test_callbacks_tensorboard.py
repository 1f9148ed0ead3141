"""A run trained with the TensorBoard callbacks, read back with TensorBoard's own reader and server.

The story: train 2 epochs on a slice of the embedded digits with the tensorboard (per-batch
scalars and histograms on), hparams, confusion_matrix, pr_curves, classification_report,
misclassified, embeddings, plots and profiler callbacks and a profiled batch range, test, then
open the run directory the way a user would: TensorBoard's EventAccumulator, the TensorBoard
HTTP server (started with scripts/tensorboard.py) and its plugins' endpoints, and the files
beside the event files.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from digits.callbacks.base import Callback
from digits.callbacks.classification_report import ClassificationReport
from digits.callbacks.confusion_matrix import ConfusionMatrixImages
from digits.callbacks.embeddings import Embeddings
from digits.callbacks.hparams import HParams
from digits.callbacks.misclassified import MisclassifiedImages
from digits.callbacks.plots import Plots
from digits.callbacks.pr_curves import PRCurves
from digits.callbacks.profiler import Profiler
from digits.callbacks.tensorboard import TensorBoardScalars
from digits.engine.trainer import Trainer

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
    """One trained and tested run with every TensorBoard/file callback."""
    log_dir = tmp_path_factory.mktemp("logs")
    trainer = Trainer(
        max_epochs=EPOCHS, log_dir=log_dir, name="story", limit_train_batches=3, verbose=False,
        enable_checkpointing=False, profile_batch=(2, 3),
        callbacks=[TensorBoardScalars(update_freq=1, histogram_freq=1), HParams(),
                   ConfusionMatrixImages(), PRCurves(), ClassificationReport(),
                   MisclassifiedImages(count=16), Embeddings(every_n_epochs=2), Plots(), Profiler()],
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


def test_pr_curves_per_class_every_epoch_and_for_the_test(run):
    from tensorboard.plugins.pr_curve import metadata as pr_metadata

    validation, test = read(run.path / "validation"), read(run.path / "test")
    for digit in range(10):
        curve = series(validation, f"{digit}/pr_curves", pr_metadata.PLUGIN_NAME)
        assert sorted(curve) == list(range(EPOCHS))
        tp, fp, tn, fn, precision, recall = curve[EPOCHS - 1]  # TensorBoard's row order
        assert tp[0] + fn[0] == (run.data.val.y == digit).sum() and recall[0] == 1.0
        assert len(tp) == 51 and (tp[:-1] >= tp[1:]).all()  # fewer positives as it rises
    tested = series(test, "test/3/pr_curves", pr_metadata.PLUGIN_NAME)[EPOCHS - 1]
    assert tested[0][0] + tested[3][0] == (run.result.y_true == 3).sum()


def test_the_projector_shows_every_test_image_as_its_digit(run):
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    directory = run.path / "test"
    config = text_format.Parse((directory / "projector_config.pbtxt").read_text(),
                               projector.ProjectorConfig())
    (embedding,) = config.embeddings
    n = len(run.result.y_true)
    assert list(embedding.tensor_shape) == [n, 64]  # the mlp's last hidden layer
    features = np.fromfile(directory / embedding.tensor_path, "<f4").reshape(n, 64)
    assert np.array_equal(features, run.result.features)
    rows = (directory / embedding.metadata_path).read_text().splitlines()
    assert rows[0] == "digit\tpredicted\tcorrect\tconfidence" and len(rows) == n + 1
    wrong = sum(row.split("\t")[2] == "no" for row in rows[1:])
    assert wrong == (run.result.y_pred != run.result.y_true).sum()
    sheet = Image.open(directory / embedding.sprite.image_path)
    assert sheet.size == (28 * 16, 28 * 16) and list(embedding.sprite.single_image_dim) == [28, 28]
    # every_n_epochs=2: the validation images too, after epoch 2 (the last), in validation/.
    config = text_format.Parse((run.path / "validation" / "projector_config.pbtxt").read_text(),
                               projector.ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == [f"validation_epoch_{EPOCHS}"]
    assert list(config.embeddings[0].tensor_shape) == [len(run.data.val), 64]


def test_the_run_is_a_row_of_the_hparams_table_with_every_column_declared(run):
    from tensorboard.plugins.hparams import metadata as hp_metadata

    root = read(run.path)
    experiment = hp_metadata.parse_experiment_plugin_data(
        root.SummaryMetadata(hp_metadata.EXPERIMENT_TAG).plugin_data.content)
    session = hp_metadata.parse_session_start_info_plugin_data(
        root.SummaryMetadata(hp_metadata.SESSION_START_INFO_TAG).plugin_data.content)
    declared = {h.name for h in experiment.hparam_infos}
    assert {"model", "hidden_units", "batch_size", "learning_rate", "optimizer",
            "dataset"} <= declared == set(session.hparams)
    assert session.hparams["hidden_units"].number_value == 64
    assert session.hparams["model"].string_value == "mlp"
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    assert {("validation", "epoch_accuracy"), ("test", "test/accuracy")} <= metrics
    accuracy = series(read(run.path / "test"), "test/accuracy", "scalars")[EPOCHS - 1]
    assert float(accuracy) == pytest.approx(run.result.accuracy)


def test_batches_histograms_and_the_custom_scalars_layout(run):
    train = read(run.path / "train")
    # Three batches a compiled call: one point per call, at the batches trained so far.
    assert sorted(series(train, "batch_loss", "scalars")) == [3, 6]
    tags = set(train.Tags()["tensors"])
    kernels = [t for t in tags if t.startswith("weights/") and "kernel" in t]
    assert kernels and {t.replace("weights/", "gradients/") for t in kernels} <= tags
    assert sorted(series(train, kernels[0], "histograms")) == list(range(EPOCHS))
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import metadata as cs_metadata

    (content,) = series(train, cs_metadata.CONFIG_SUMMARY_TAG, cs_metadata.PLUGIN_NAME).values()
    layout = layout_pb2.Layout.FromString(content.item())
    charts = [c.multiline.tag[0] for c in layout.category[0].chart]
    assert charts == [r"^epoch_loss$", r"^epoch_accuracy$", r"^epoch_learning_rate$",
                      r"^epoch_images_per_second$"]


def test_the_profiled_batches_and_every_hooks_time(run):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (trace,) = run.path.glob("plugins/profile/*/*.xplane.pb")
    space = xplane_pb2.XSpace.FromString(trace.read_bytes())
    assert any(plane.lines for plane in space.planes)  # events were recorded
    text = (run.path / "profile.txt").read_text()
    assert text.startswith("fit: ") and "\n\ntest: " in text
    assert "TensorBoardScalars" in text and "trainer: state + metrics.json" in text
    tables = series(read(run.path / "train"), "profile/fit", "text")
    assert "on_epoch_end" in tables[EPOCHS - 1].item().decode()


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


def test_tensorboard_serves_every_dashboard_the_run_fills(run):
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

        # The Projector, PR Curves and HParams dashboards read what the callbacks wrote.
        assert "test" in launcher.get_json(f"{base}/data/plugin/projector/runs")
        n = len(run.result.y_true)
        with urllib.request.urlopen(f"{base}/data/plugin/projector/tensor?run=test&name=test"
                                    f"&num_rows={n}", timeout=30) as response:
            assert len(response.read()) == n * 64 * 4  # float32 rows, as the page reads them
        with urllib.request.urlopen(f"{base}/data/plugin/projector/sprite_image?run=test"
                                    "&name=test", timeout=30) as response:
            assert Image.open(io.BytesIO(response.read())).size == (28 * 16, 28 * 16)
        curves = launcher.get_json(f"{base}/data/plugin/pr_curves/tags")
        assert {f"{d}/pr_curves" for d in range(10)} <= set(curves["validation"])
        request = urllib.request.Request(
            f"{base}/data/plugin/hparams/experiment", method="POST",
            data=b'{"experimentName": ""}', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            experiment = json.loads(response.read())
        assert {"model", "batch_size", "learning_rate"} <= {
            h["name"] for h in experiment["hparamInfos"]}
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
