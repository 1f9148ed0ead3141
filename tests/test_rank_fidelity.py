"""scripts/rank_fidelity.py: a search's configurations, each once at its longest trial, trained
to the end on the search's split, and the rank correlation of the two."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rank_fidelity.py"


@pytest.fixture(scope="module")
def fidelity():
    spec = importlib.util.spec_from_file_location("rank_fidelity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trial(project: Path, trial_id: str, score, values: dict, status="COMPLETED", epochs=None):
    extra = {"tuner/epochs": epochs, "tuner/trial_id": "x"} if epochs else {}
    (project / f"trial_{trial_id}").mkdir(parents=True)
    (project / f"trial_{trial_id}" / "trial.json").write_text(json.dumps({
        "trial_id": trial_id, "status": status, "score": score,
        "hyperparameters": {"values": {**values, **extra}}}))


def test_each_configuration_once_at_its_longest_trial(tmp_path, fidelity):
    a = {"filters": 32, "optimizer": "adam", "learning_rate": 0.002, "batch_norm": True}
    b = {**a, "filters": 8}
    trial(tmp_path, "00", 0.95, a, epochs=2)
    trial(tmp_path, "01", 0.97, b, epochs=2)
    trial(tmp_path, "02", 0.99, a, epochs=4)  # Hyperband promoted a: its longer trial counts
    trial(tmp_path, "03", None, {**a, "filters": 16}, status="FAILED")
    found = fidelity.configurations(tmp_path)
    assert [(c["trial_id"], c["score"], c["epochs"]) for c in found] == [("02", 0.99, 4),
                                                                         ("01", 0.97, 2)]
    assert all(not k.startswith("tuner/") for c in found for k in c["values"])

    args = fidelity.argparse.Namespace(dataset="mnist-5k", seed=3, validation_split=0.1,
                                       epochs=None, log_dir=tmp_path / "full",
                                       train_args=["--limit-train-batches", "2"])
    command = fidelity.train_command(found[1], args)
    assert command[1:3] == ["-m", "digits.train"]
    joined = " ".join(command)
    assert "--seed 3 --validation-split 0.1 --optimizer adam --learning-rate 0.002" in joined
    assert "--hp batch_norm=True --hp filters=8" in joined and "--epochs" not in joined
    assert command[-2:] == ["--limit-train-batches", "2"] and "--name trial_01" in joined

    assert fidelity.spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert fidelity.spearman([1, 2, 3], [5, 5, 5]) is None and fidelity.spearman([1, 2], [1, 2]) is None


def test_a_project_that_is_not_one_is_one_error_line(tmp_path, fidelity, capsys):
    assert fidelity.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: not a digits.tune project")


def test_along_the_way_ranks_by_each_epoch_against_the_last(fidelity):
    rows = [{"full_history": h} for h in ([0.5, 0.9, 0.91, 0.95, 0.96],
                                          [0.6, 0.8, 0.92, 0.94, 0.97],
                                          [0.7, 0.7, 0.93, 0.93, 0.98])]
    # After one epoch the order already is the last epoch's; after two it is reversed.
    assert fidelity.along_the_way(rows) == [(1, pytest.approx(1.0)), (2, pytest.approx(-1.0)),
                                            (3, pytest.approx(1.0)), (4, pytest.approx(-1.0))]


def test_the_bootstrap_interval_holds_the_figure_and_widens_with_disagreement(fidelity):
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    low, high = fidelity.bootstrap_interval(scores, [1, 2, 3, 4, 5, 6, 7, 8])
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)  # every draw agrees
    ends = [2, 1, 4, 3, 6, 5, 8, 7]
    low, high = fidelity.bootstrap_interval(scores, ends)
    assert low < fidelity.spearman(scores, ends) <= high <= 1.0
    assert fidelity.bootstrap_interval(scores, ends) == (low, high)  # seeded: the same again
    assert fidelity.bootstrap_interval([1, 2, 3], [5, 5, 5]) is None
