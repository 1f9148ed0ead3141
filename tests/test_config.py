"""digits.engine.config: the Trainer's settings, checked once, and the flags built from them."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from digits import cli
from digits.engine.config import DEFAULTS, NAME_PATTERN, RANGES, TrainerSettings, check_name
from digits.errors import ConfigError

# setting -> the command-line type that parses it
FLAG_TYPES = {"batch_size": cli.batch_int, "seed": cli.seed_int,
              "learning_rate": cli.learning_rate, "label_smoothing": cli.label_smoothing,
              "ema_decay": cli.ema_decay,
              "max_epochs": cli.positive_int, "limit_batches": cli.positive_int}


@pytest.mark.parametrize("name", sorted(FLAG_TYPES))
def test_a_flag_and_its_setting_accept_exactly_the_same_edges(name):
    """The CLI takes its ranges from the config, so the two cannot drift apart."""
    r = RANGES[name]
    step = 1 if r.kind is int else 1e-9
    inside = [r.hi] + ([] if r.lo_open else [r.lo])
    outside = [r.hi + step, r.lo - step] + ([r.lo] if r.lo_open else [])
    for value in inside:
        assert r.contains(r.kind(value))
        FLAG_TYPES[name](str(r.kind(value)))
    for value in outside:
        assert not r.contains(r.kind(value))
        with pytest.raises(argparse.ArgumentTypeError):
            FLAG_TYPES[name](str(r.kind(value)))


def test_every_choice_flag_offers_the_settings_choices():
    parser = cli.ArgumentParser()
    cli.add_trainer_arguments(parser, epochs_default=40)
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.choices}
    assert choices["optimizer"] == ("adam", "adamw", "sgd", "rmsprop")
    assert choices["precision"] == ("auto", "float32", "mixed_float16", "mixed_bfloat16")
    assert choices["strategy"] == ("none", "mirrored")
    defaults = {a.dest: a.default for a in parser._actions}
    for name in ("batch_size", "learning_rate", "label_smoothing", "optimizer"):
        assert defaults[name] == getattr(DEFAULTS, name)


@pytest.mark.parametrize("settings", [
    {"max_epochs": 0}, {"max_epochs": True}, {"max_epochs": 2.0}, {"batch_size": 65537},
    {"seed": -1}, {"seed": 2**31}, {"learning_rate": 0}, {"learning_rate": float("inf")},
    {"learning_rate": "0.1"}, {"label_smoothing": 0.51}, {"precision": "fp8"},
    {"ema_decay": 1.0}, {"ema_decay": 0.0},
    {"strategy": "tpu"}, {"optimizer": "lbfgs"}, {"lr_schedule": "step"},
    {"steps_per_execution": 0}, {"steps_per_execution": "fast"}, {"limit_val_batches": 0},
])
def test_a_bad_setting_is_one_config_error_naming_it(settings):
    (name, value), = settings.items()
    with pytest.raises(ConfigError, match=f"^{name} must be .*got {value!r}"):
        TrainerSettings(**settings)


def test_fast_dev_run_is_resolved_once_and_the_config_is_frozen():
    config = TrainerSettings(max_epochs=30, fast_dev_run=True, limit_train_batches=100)
    assert (config.max_epochs, config.limit_train_batches, config.limit_val_batches,
            config.limit_test_batches) == (1, 2, 2, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_epochs = 3


def test_steps_follow_the_batches_of_an_epoch():
    config = TrainerSettings(batch_size=128)
    assert config.train_steps(4050) == 32 and config.steps_per_execution_for(32) == 32
    assert config.steps_per_execution_for(5) == 5  # "auto": never more than an epoch
    assert TrainerSettings(limit_train_batches=3).train_steps(4050) == 3
    assert TrainerSettings(steps_per_execution=7).steps_per_execution_for(100) == 7
    assert TrainerSettings(batch_size=64).eval_batch_size == 512


@pytest.mark.parametrize("name", ["a" * 101, "..", "../up", "", "with space"])
def test_a_run_name_is_refused_alike_by_the_trainer_and_the_flag(name):
    with pytest.raises(ConfigError):
        check_name(name)
    with pytest.raises(argparse.ArgumentTypeError):
        cli.name_type(name)
    assert NAME_PATTERN  # one pattern for both


def test_the_trainer_exposes_each_setting_read_only(tmp_path):
    from digits.engine.trainer import Trainer

    trainer = Trainer(batch_size=64, optimizer="sgd", log_dir=tmp_path, verbose=False)
    assert (trainer.batch_size, trainer.optimizer, trainer.max_epochs) == (64, "sgd", 40)
    # "auto" is resolved once, by the Trainer: its settings hold the policy it computes in.
    assert trainer.settings == TrainerSettings(batch_size=64, optimizer="sgd",
                                             precision=trainer.precision)
    assert trainer.precision in ("float32", "mixed_bfloat16")
    with pytest.raises(AttributeError):
        trainer.batch_size = 32


@pytest.mark.parametrize("text", ["5,2", "0,3", "3", "a,b", "1,2,3", ""])
def test_a_profile_range_is_two_ordered_batch_numbers(text):
    with pytest.raises(argparse.ArgumentTypeError, match="START,STOP"):
        cli.batch_range(text)


def test_a_good_profile_range_is_kept_and_checked_against_the_run():
    assert cli.batch_range("3,7") == (3, 7)
    config = TrainerSettings(max_epochs=2, profile_batch=[3, 7])
    assert config.profile_batch == (3, 7)
    config.check_profile_range(train_steps=4)  # 8 batches in the run
    with pytest.raises(ConfigError, match="ends past the run's 6 training batches"):
        config.check_profile_range(train_steps=3)
    assert "profile_batch" not in config.to_dict()  # it observes a run; resuming ignores it
