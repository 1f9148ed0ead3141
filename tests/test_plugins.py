"""A third-party callback plugin, installed with pip, is found by name and sees every hook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "digits-notify"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """examples/digits-notify, pip-installed into a directory of its own (offline)."""
    work = tmp_path_factory.mktemp("plugin")
    # Built from a copy: pip writes build/ and *.egg-info beside the sources it builds.
    source = shutil.copytree(PLUGIN, work / "src",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (site / "digits_notify-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


def run_python(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1",
                **env}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=600)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_installed_plugin_is_listed_by_name_with_its_distribution(plugin_site):
    done = run_python(plugin_site, "-m", "digits.callbacks")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("notify "))
    assert "digits-notify (digits_notify:Notify)" in row
    assert row.endswith("Append a JSON line for fit start, each epoch's metrics, fit end and "
                        "the test result.")


def test_the_plugin_sees_every_hook_in_order_when_training(plugin_site, tmp_path):
    events = tmp_path / "events.jsonl"
    script = textwrap.dedent(f"""
        from digits.callbacks.registry import create, registered
        from digits.data import Dataset, load_dataset
        from digits.engine.trainer import Trainer

        entry = registered()["notify"]
        assert (entry.distribution, entry.value) == ("digits-notify", "digits_notify:Notify")

        full = load_dataset("mnist-5k")
        data = Dataset(full.train.take(512), full.val.take(256), full.test.take(256),
                       "mnist-5k-small", "a slice of the embedded digits")
        notify = create("notify(path={str(events)!r})")
        trainer = Trainer(max_epochs=2, callbacks=[notify], log_dir={str(tmp_path / "logs")!r},
                          verbose=False)
        model = trainer.build_model("mlp", hidden_units=32)
        trainer.fit(model, data)
        trainer.test(model, data)
        print(type(notify).__module__, notify.name)
    """)
    done = run_python(plugin_site, "-c", script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["digits_notify", "notify"]

    seen = read_events(events)
    assert [e["hook"] for e in seen] == ["on_fit_start", "on_epoch_end", "on_epoch_end",
                                         "on_fit_end", "on_test_end"]
    assert seen[0]["max_epochs"] == 2 and seen[0]["run"].endswith("version_0")
    assert [e["epoch"] for e in seen[1:3]] == [1, 2]
    for epoch in seen[1:3]:
        assert 0.0 <= epoch["logs"]["val_accuracy"] <= 1.0
    assert seen[3]["epochs"] == 2 and seen[3]["stop_reason"] is None
    assert seen[4]["examples"] == 256 and 0.0 <= seen[4]["accuracy"] <= 1.0


def test_digits_train_takes_the_plugin_by_name(plugin_site, tmp_path):
    events = tmp_path / "events.jsonl"
    done = run_python(plugin_site, "-m", "digits.train", "--dataset", "mnist-5k", "--model", "mlp",
                      "--epochs", "2", "--limit-train-batches", "4", "--no-default-callbacks",
                      "--callbacks", "notify", "--log-dir", str(tmp_path / "logs"),
                      DIGITS_NOTIFY_FILE=str(events))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [e["hook"] for e in read_events(events)] == [
        "on_fit_start", "on_epoch_end", "on_epoch_end", "on_fit_end", "on_test_end"]
