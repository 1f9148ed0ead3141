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


# -- one declaration per setting ---------------------------------------------------------------


def parser_of(command: str) -> argparse.ArgumentParser:
    module = {"train": "digits.train", "tune": "digits.tune"}[command]
    import importlib

    return importlib.import_module(module).build_parser()


@pytest.mark.parametrize("command", ["train", "tune"])
def test_every_declared_flag_is_offered_with_its_declared_default_and_help(command):
    options = {o: a for a in parser_of(command)._actions for o in a.option_strings}
    for field in dataclasses.fields(TrainerSettings):
        meta = field.metadata
        assert meta["help"], field.name
        offered = meta["flag"] and (command == "train" or meta["tune"] or field.name == "seed")
        if not offered:
            continue
        action = options[meta["flag"]]
        default = meta["none_word"] if field.default is None and meta["none_word"] else \
            field.default
        if field.name != "max_epochs":  # digits.tune's trials and final retraining have theirs
            assert action.default == default or (command, field.name) in {
                ("train", "learning_rate")}, field.name  # None: resolved with --init-from
        if field.name not in ("max_epochs", "learning_rate"):
            assert action.help == meta["help"].format(default=field.default)


def test_the_flags_give_the_trainer_exactly_the_settings_they_name(tmp_path):
    from digits.engine.trainer import Trainer

    args = parser_of("train").parse_args([
        "--epochs", "7", "--batch-size", "64", "--ema", "0.9", "--strategy", "none",
        "--precision", "float32", "--steps-per-execution", "3", "--profile-batch", "1,2",
        "--limit-train-batches", "5", "--deterministic", "--seed", "4", "--optimizer", "sgd",
        "--learning-rate", "0.01", "--label-smoothing", "0"])
    chosen = cli.settings_from_args(args)
    assert Trainer(log_dir=tmp_path, **chosen).settings == TrainerSettings(
        max_epochs=7, batch_size=64, ema_decay=0.9, strategy=None, precision="float32",
        steps_per_execution=3, profile_batch=(1, 2), limit_train_batches=5,
        deterministic=True, seed=4, optimizer="sgd", learning_rate=0.01, label_smoothing=0.0)
    tune_args = parser_of("tune").parse_args(["--swa", "3", "--batch-size", "32"])
    assert {k: cli.settings_from_args(tune_args)[k] for k in ("swa_epochs", "batch_size")} == \
        {"swa_epochs": 3, "batch_size": 32}
    assert "optimizer" not in cli.settings_from_args(tune_args)  # searched, not a flag there


def test_a_new_setting_is_one_field_and_the_commands_offer_it(monkeypatch):
    """Declared once (a field with `setting(...)`), it is a flag of both commands with its
    range, and the flags hand it back."""
    from digits.engine import config

    grown = dataclasses.make_dataclass(
        "GrownSettings", [("warmup_epochs", int, config.setting(
            2, "epochs of linear warm-up (default: {default})", "--warmup-epochs", "N", "count",
            tune=True))], bases=(TrainerSettings,), frozen=True)
    monkeypatch.setattr(config, "TrainerSettings", grown)
    for command in ("train", "tune"):
        parser = parser_of(command)
        assert cli.settings_from_args(parser.parse_args(["--warmup-epochs", "5"]))[
            "warmup_epochs"] == 5
        action = next(a for a in parser._actions if "--warmup-epochs" in a.option_strings)
        assert (action.default, action.help) == (2, "epochs of linear warm-up (default: 2)")
        with pytest.raises(SystemExit):
            parser.parse_args(["--warmup-epochs", "0"])


def test_the_trainer_takes_settings_whole_or_as_keywords_and_refuses_unknown_ones(tmp_path):
    import inspect

    from digits.engine.trainer import Trainer

    whole = Trainer(TrainerSettings(max_epochs=3, batch_size=32), log_dir=tmp_path, batch_size=16)
    assert (whole.max_epochs, whole.batch_size) == (3, 16)  # a keyword wins
    parameters = inspect.signature(Trainer).parameters
    assert all(parameters[f.name].default == f.default for f in dataclasses.fields(TrainerSettings))
    assert all(f"{f.name}=" in Trainer.__doc__ for f in dataclasses.fields(TrainerSettings))
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_epoch'"):
        Trainer(max_epoch=3)
    assert DEFAULTS.max_epochs == 40 and Trainer().max_epochs == 40
    from digits import train, tune

    assert train.DEFAULT_EPOCHS == tune.DEFAULT_FINAL_EPOCHS == DEFAULTS.max_epochs


def test_the_default_epochs_follow_the_data_size():
    """40 epochs for the embedded digits, 16 for full MNIST, never fewer than 10; a cosine
    schedule restarted N times gets a multiple of N; the flags' help says so."""
    from digits import train, tune
    from digits.recipes.data_size import default_epochs, describe

    assert [default_epochs(n) for n in (4_050, 21_600, 21_601, 30_000, 54_000, 60_000,
                                        10**6)] == [40, 40, 40, 29, 16, 14, 10]
    assert default_epochs(4_050, multiple_of=3) == 42 and default_epochs(54_000, 3) == 18
    assert describe(4_050, 40) == "" and describe(54_000, 16, "--final-epochs").endswith(
        "--final-epochs N to choose")
    assert train.build_parser().parse_args([]).epochs is None
    assert tune.build_parser().parse_args([]).final_epochs is None
    for parser in (train.build_parser(), tune.build_parser()):
        text = " ".join(parser.format_help().split())
        assert "16 for full MNIST's 54,000" in text and "how long, on 2 CPU cores" in text
        assert "full MNIST" in text.split("how long", 1)[1]
