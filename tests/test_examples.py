"""The Lightning-style example: a `keras.Model` subclass with its own `compute_loss` (mixup),
trained by the Trainer with the default callbacks, cut off and resumed, tested, loaded and
exported."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import ROOT, run_cli

EXAMPLE = ROOT / "examples" / "lightning-style" / "mixup_model.py"


def load_example():
    spec = importlib.util.spec_from_file_location("mixup_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_mixup_subclass_trains_resumes_tests_loads_and_exports(tmp_path, capsys):
    import digits
    from digits import export
    from digits.callbacks import Callback

    example = load_example()

    class CutOff(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt  # as Ctrl-C as the second epoch ends: the first is saved

    data = digits.load_dataset("mnist-5k", test_dataset="mnist-test", announce=False)
    first = digits.Trainer(max_epochs=2, log_dir=tmp_path, name="mixup", limit_train_batches=2,
                           resume=True, callbacks=[CutOff()], verbose=False)
    with pytest.raises(KeyboardInterrupt):
        first.fit(example.MixupCNN(name="mixup_cnn"), data)

    assert example.main(["--epochs", "2", "--limit-train-batches", "2",
                         "--log-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    run = tmp_path / "mixup" / "version_0"
    assert "resumed" in err and f"run directory: {run}" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["resumed_from_epoch"] == 1
    assert metrics["epochs_completed"] == 2 and 0 < metrics["test"]["accuracy"] <= 1
    model = digits.models.load_model(str(run / "model.keras"))
    assert type(model).__name__ == "MixupCNN" and model.alpha == 0.2
    assert export.main(["--model", str(run / "model.keras"), "--format", "onnx",
                        "--dataset", "mnist-5k"]) == 0
    assert (run / "model.onnx").is_file()

    # A new process does not know MixupCNN until it imports the module that registers it.
    refused = run_cli("digits.evaluate", "--model", str(run / "model.keras"),
                      "--dataset", "mnist-5k")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "class MixupCNN is one this process does not know" in refused.stderr
    assert "--model-module" in refused.stderr
    import numpy as np
    from PIL import Image

    digit = data.test.x[int(np.flatnonzero(data.test.y == 3)[0]), :, :, 0]
    Image.fromarray((digit * 255).astype(np.uint8)).save(tmp_path / "three.png")
    read = run_cli("digits.predict", "--model", str(run / "model.keras"), "--model-module",
                   str(EXAMPLE), "--json", str(tmp_path / "three.png"))
    assert read.returncode == 0, read.stderr
    assert len(json.loads(read.stdout)[0]["digits"][0]["top3"]) == 3
    missing = run_cli("digits.evaluate", "--model", str(run / "model.keras"),
                      "--model-module", "no_such_module_here")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        "error: --model-module no_such_module_here: no module named 'no_such_module_here'")
