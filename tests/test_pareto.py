"""Multi-objective search: `digits.tune --objectives val_accuracy,latency,size,params` measures
what each trial's model costs, keeps the Pareto front, and `--choose` retrains the most accurate
trial within a constraint."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from digits.errors import ConfigError
from digits.tuner.pareto import (
    Objectives,
    choose,
    front,
    pareto_png,
    parse_constraint,
    parse_objectives,
)
from tests.conftest import run_cli

METRICS = ("val_accuracy", "val_loss")
BOTH = Objectives("val_accuracy", ("latency", "size"))


def point(trial_id, accuracy, latency, size):
    return {"trial_id": trial_id, "val_accuracy": accuracy, "latency": latency, "size": size}


def test_objectives_and_constraints_are_read_with_their_units():
    assert parse_objectives("val_accuracy,latency,size", METRICS) == BOTH
    for bad in ("latency", "val_accuracy", "val_accuracy,val_loss,size", "val_accuracy,speed",
                "val_accuracy,size,size"):
        with pytest.raises(ConfigError, match="--objectives"):
            parse_objectives(bad, METRICS)
    assert parse_constraint("latency<=0.5ms", BOTH).limit == 0.5
    assert parse_constraint("latency < 300us", BOTH).limit == pytest.approx(0.3)
    assert parse_constraint("latency<=0.5ms", BOTH).allows(0.5)
    assert not parse_constraint("latency<0.5ms", BOTH).allows(0.5)
    assert parse_constraint("size<=100KB", BOTH).limit == 100 * 1024
    assert parse_constraint("size<=2mb", BOTH).limit == 2 * 1024 ** 2
    assert parse_constraint("params<=50k", Objectives("val_accuracy", ("params",))).limit == 5e4
    for bad, match in (("speed<=1ms", "COST<=VALUE"), ("latency<=1KB", "takes a unit"),
                       ("params<=5k", "measure params first"), ("latency>=1ms", "COST<=VALUE")):
        with pytest.raises(ConfigError, match=match):
            parse_constraint(bad, BOTH)


def test_the_front_keeps_what_nothing_beats_on_every_objective():
    points = [point("a", 0.99, 1.0, 500), point("b", 0.98, 0.3, 100),  # both on the front
              point("c", 0.97, 0.4, 200),  # b is better on all three
              point("d", 0.99, 1.0, 600),  # a is as good and smaller
              point("e", 0.95, 0.2, 900),  # fastest: on the front
              point("f", 0.99, 1.0, 500)]  # a's equal: neither dominates
    assert [p["trial_id"] for p in front(points, BOTH, maximise=True)] == ["a", "f", "b", "e"]
    losses = Objectives("val_loss", ("latency",))
    assert [p["trial_id"] for p in front(
        [{"trial_id": "x", "val_loss": 0.1, "latency": 2.0},
         {"trial_id": "y", "val_loss": 0.2, "latency": 1.0},
         {"trial_id": "z", "val_loss": 0.3, "latency": 1.5}], losses, maximise=False)] == ["x", "y"]
    within = choose(points, BOTH, parse_constraint("latency<=0.35ms", BOTH), maximise=True)
    assert within["trial_id"] == "b"
    assert choose(points, BOTH, parse_constraint("latency<0.2ms", BOTH), maximise=True) is None


def test_the_picture_has_one_panel_per_cost():
    points = [point("0", 0.99, 0.4, 6e5), point("1", 0.98, 0.1, 5e4), point("2", 0.9, 0.2, 1e5)]
    kept = front(points, BOTH, True)
    image = Image.open(io.BytesIO(pareto_png(points, kept, BOTH, True, kept[1])))
    assert image.format == "PNG" and image.size == (1000, 400)
    assert Image.open(io.BytesIO(pareto_png([], [], BOTH, True))).size == (1000, 400)


def test_the_planned_small_end_is_in_the_space_and_a_fifth_of_the_default_or_less():
    from digits.models import build_model
    from digits.tuner.space import SMALL_LADDER, search_space

    space = {d.name: d for d in search_space(small=True)}
    default = build_model("cnn").count_params()
    sizes = []
    for changes in SMALL_LADDER:
        for name, value in changes.items():
            assert value in space[name].values
        sizes.append(build_model("cnn", **changes).count_params())
    assert max(sizes) * 5 <= default and sizes == sorted(sizes, reverse=True)


TINY = ["--final-ensemble", "1", "--dataset", "mnist-5k", "--limit-train-batches", "3",
        "--limit-val-batches", "2", "--no-default-callbacks", "--callbacks", "tensorboard",
        "--tuner", "random", "--max-trials", "3", "--max-epochs", "1",
        "--objectives", "val_accuracy,latency,size,params", "--project", "p"]


@pytest.mark.slow
def test_a_search_keeps_its_front_and_retrains_the_choice(tmp_path, capsys, reader_model):
    # Two trials at a time (the main job's mode): the costs travel to the chief with the epochs.
    first = run_cli("digits.tune", *TINY, "--final-epochs", "0", "--directory", str(tmp_path))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # keras-tuner 1.4 printed a condition's value each time a trial went to a worker.
    assert not {"adam", "sgd"} & set(first.stdout.splitlines())
    project = tmp_path / "p"
    pareto = json.loads((project / "pareto.json").read_text())
    assert pareto["objectives"] == ["val_accuracy", "latency", "size", "params"]
    trials = {t["trial_id"]: t for t in pareto["trials"]}
    assert len(trials) == 3
    for t in trials.values():
        record = json.loads((project / f"trial_{t['trial_id']}" / "digits_trial.json")
                            .read_text())
        assert record["costs"]["cost_size_bytes"] == t["size"] > 1000
        assert record["costs"]["cost_params"] == t["params"] and 0 < t["latency"] < 100
        assert "separable" in t["hyperparameters"]  # the space's small end
    # The default first, then the default scaled down (the space's planned small end).
    from digits.tuner.space import SMALL_LADDER, search_space

    defaults = {d.name: d.default for d in search_space(small=True)}
    for trial_id, changes in zip(sorted(trials), ({}, *SMALL_LADDER), strict=False):
        assert trials[trial_id]["hyperparameters"] == {**defaults, **changes}
    objectives = Objectives("val_accuracy", ("latency", "size", "params"))
    assert pareto["front"] == [p["trial_id"] for p in front(list(trials.values()), objectives,
                                                              True)]
    assert {t["trial_id"] for t in pareto["trials"] if t["on_front"]} == set(pareto["front"])
    assert f"Pareto front (val_accuracy against latency, size, params): " \
           f"{len(pareto['front'])} of 3 trials" in first.stdout
    assert Image.open(project / "pareto.png").size == (1500, 400)
    from tests.test_tune import event_tags

    tags, _ = event_tags(project / "search")
    assert {"search/pareto_front", "search/what_mattered"} <= set(tags["tensors"])

    # The smallest model on the front, chosen by its parameters: the finished search is reloaded
    # (no trial rerun) and that trial retrained, distilled from a trained model, as one model
    # (no --final-ensemble: an ensemble of three would cost three times the constraint).
    smallest = min((trials[t] for t in pareto["front"]), key=lambda t: t["params"])
    limit = f"params<={int(smallest['params'])}"
    assert TINY[:2] == ["--final-ensemble", "1"]
    again = run_cli("digits.tune", *TINY[2:], "--final-epochs", "1", "--final-compare", "none", "--choose", limit,
                    "--distill-from", reader_model, "--directory", str(tmp_path))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "started" not in again.stdout.replace("no workers are started", "")
    chosen = json.loads((project / "best_hyperparameters.json").read_text())
    assert chosen["trial_id"] == smallest["trial_id"] and chosen["chosen_by"] == limit
    assert f"retraining the chosen hyperparameters (trial {smallest['trial_id']})" in again.stdout
    [run] = (project / "best").glob("version_*")
    assert not (project / "best-ensemble").exists() and "an ensemble" not in again.stdout
    from digits.models import load_model

    assert load_model(str(run / "model.keras")).count_params() == smallest["params"]
    config = json.loads((run / "config.json").read_text())
    assert config["trainer"]["distill_from"] == config["tune_final"]["distill_from"] == reader_model
    assert all(config["hyperparameters"][k] == v for k, v in smallest["hyperparameters"].items()
               if k not in ("optimizer", "learning_rate"))

    # A constraint no trial meets: one line, exit 2, the search kept (in this process).
    from tests.test_tune import tune_main

    capsys.readouterr()
    code = tune_main([*TINY, "--parallel-trials", "1", "--final-epochs", "0", "--choose",
                      "size<=1KB", "--directory", str(tmp_path)])
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --choose size<=1KB: no completed trial is within it")
    assert json.loads((project / "pareto.json").read_text())["front"] == pareto["front"]


def test_a_chosen_point_is_retrained_as_one_model_unless_told(capsys):
    # An ensemble of three costs three times the constraint --choose was given.
    from digits.tune import DEFAULT_FINAL_ENSEMBLE, _resolve_objectives, build_parser

    def resolved(*argv):
        args = build_parser().parse_args(list(argv))
        _resolve_objectives(args)
        return args.final_ensemble

    costs = ("--objectives", "val_accuracy,size")
    assert resolved() == resolved(*costs) == DEFAULT_FINAL_ENSEMBLE == 3
    assert resolved(*costs, "--choose", "size<=120KB") == 1
    capsys.readouterr()
    assert resolved(*costs, "--choose", "size<=120KB", "--final-ensemble", "2") == 2
    assert "notice: --final-ensemble 2 averages 2 models of the chosen point: about 2 times " \
           "its latency, size and parameters, beyond size<=120KB" in capsys.readouterr().err
