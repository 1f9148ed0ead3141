"""The one argument and error layer shared by every `python -m digits.X` entry point.

Nothing here imports TensorFlow: `--help` and argument errors answer at once. Errors caused by
the user's input become one `error: ...` line on stderr and exit code 2; a failure during
training (a NaN loss, a callback that raised) exits 1; Ctrl-C exits 130, and SIGTERM, handled the
same way, 143.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.abc
import importlib.util
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import tomllib

from digits.engine import config as settings
from digits.errors import ConfigError, DigitsError, RunFailure

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that died of it
MAX_CONFIG_BYTES = 1024 * 1024


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line (no usage dump) and exit 2."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


# ----------------------------------------------------------------------------- value types


def number_type(kind: type, lo=None, hi=None, lo_open: bool = False, label: str = "a number"):
    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {label}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text}")
        return value

    parse.__name__ = label
    parse.whole = kind is int  # a TOML float is refused for it, not truncated
    return parse


def setting_type(name: str, label: str):
    """The argument type of a Trainer setting: its range from `digits.engine.config.RANGES`."""
    r = settings.RANGES[name]
    return number_type(r.kind, r.lo, r.hi, lo_open=r.lo_open, label=label)


positive_int = setting_type("limit_batches", "a whole number >= 1")
non_negative_int = number_type(int, 0, 1_000_000, label="a whole number >= 0")
seed_int = setting_type("seed", "a seed from 0 to 2147483647")
batch_int = setting_type("batch_size", "a batch size from 1 to 65536")
fraction = number_type(float, 0.0, 0.9, lo_open=True, label="a fraction in (0, 0.9]")
learning_rate = setting_type("learning_rate", "a learning rate in (0, 10]")


def learning_rate_or_auto(text: str):
    """A learning rate, or "auto": the learning-rate range test's suggestion."""
    return "auto" if text == "auto" else learning_rate(text)


port_number = number_type(int, 0, 65535, label="a port from 0 to 65535")
ensemble_size = number_type(int, 1, 20, label="an ensemble size from 1 to 20")
worker_count = number_type(int, 1, 64, label="a number of workers from 1 to 64")


def steps_per_execution(text: str):
    if text == "auto":
        return "auto"
    return setting_type("steps_per_execution", "'auto' or a whole number >= 1")(text)


def batch_range(text: str) -> tuple[int, int]:
    """`START,STOP`: training batches counted from 1 over the run (`--profile-batch`)."""
    start, sep, stop = text.partition(",")
    try:
        value = (int(start), int(stop)) if sep else None
    except ValueError:
        value = None
    try:
        settings.check_profile_batch(value)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected START,STOP with 1 <= START <= STOP, got {text!r}") from None
    return value


def auto_or_positive_int(text: str):
    """`auto` or a whole number >= 1 (`--parallel-trials`)."""
    if text == "auto":
        return "auto"
    return positive_int(text)


def duration(text: str) -> float:
    """Seconds from `90`, `45s`, `20m`, `1h` or `1h30m` (more than 0, at most a week)."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                         r"(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 20m or 1h30m, "
                                         f"got {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 0 < total <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"a duration must be more than 0 and at most a week, "
                                         f"got {text!r}")
    return total


def name_type(text: str) -> str:
    if not re.fullmatch(settings.NAME_PATTERN, text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"must be letters, digits, '.', '_' or '-', got {text!r}")
    return text


def hyperparameter(text: str) -> tuple[str, object]:
    """`KEY=VALUE` with VALUE a Python literal (`filters=32`, `batch_norm=False`)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise argparse.ArgumentTypeError(f"{key}: {raw!r} is not a literal value") from None
    if not isinstance(value, (int, float, bool, str)):
        raise argparse.ArgumentTypeError(f"{key}: expected a number, boolean or string")
    return key, value


def non_empty(text: str) -> str:
    """A path or spec: not empty (which would silently mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path or name, got an empty string")
    return text


def csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected one or more comma-separated names")
    return items


# ----------------------------------------------------------------------------- shared flags


class _DatasetSpecs(argparse._AppendAction):
    """`--dataset` given once is one spec; given again, the specs are mixed. The default (a
    string) is replaced by the first one given, not appended to."""

    def __call__(self, parser, namespace, values, option_string=None):
        # The first one given replaces the default (and a --config file's list): flags win.
        given = getattr(namespace, self.dest) if getattr(namespace, "_datasets_given", False) \
            else []
        namespace._datasets_given = True
        setattr(namespace, self.dest, [*given, values])


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str = "auto") -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", type=non_empty, default=default_dataset, metavar="SPEC",
                       action=_DatasetSpecs,
                       help="auto (full MNIST if available, else the embedded 5,000), mnist, "
                            "mnist-5k, fashion-mnist, a directory of IDX files, an .npz, a "
                            "folder of your images in class folders 0/ to 9/ (or train/, val/, "
                            "test/ holding them; each image read as digits.predict reads it), "
                            "or a CSV in Kaggle's train.csv layout "
                            f"(default: {default_dataset}). Given more than once, the datasets "
                            "are mixed: each is split on its own (stratified) and training, "
                            "validation and test are their union, validation accuracy is "
                            "reported per dataset too; SPEC:xN repeats a dataset's training "
                            "digits N times an epoch (e.g. --dataset mine:x5 --dataset mnist-5k "
                            "gives 300 of yours the weight of 1,500)")
    group.add_argument("--strict", action="store_true",
                       help="refuse a folder of images in which any file is not read as one "
                            "digit (by default such files are skipped and listed in the run "
                            "directory's skipped_images.txt)")
    group.add_argument("--test-dataset", type=non_empty, default=None, metavar="SPEC",
                       help="a separate test set, e.g. mnist-test (the official 10,000); "
                            "the main dataset then goes whole to training and validation")
    group.add_argument("--validation-split", type=fraction, default=0.1, metavar="F",
                       help="fraction held out for validation, stratified (default: 0.1)")
    add_setting_argument(group, "seed")


def add_saved_model_argument(parser: argparse.ArgumentParser) -> None:
    """`--model PATH`: a trained model in any format `digits.deploy.runtimes` reads."""
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="a .keras model file, or its export by digits.export (SavedModel "
                             "directory, .onnx, .tflite)")


def add_model_module_argument(parser: argparse.ArgumentParser) -> None:
    """`--model-module MODULE` (repeatable): code that defines a saved model's own classes."""
    parser.add_argument("--model-module", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a dotted module name, or a .py file) before loading "
                             "the model: the module that defines your keras.Model subclass or "
                             "layers with @keras.saving.register_keras_serializable(). It runs "
                             "as your code; Keras safe mode stays on for the file. Repeatable")


def import_model_modules(modules: list[str]) -> None:
    """Import each `--model-module` (a dotted name or a `.py` file), so that the Keras classes it
    registers can be loaded. One `error:` line for a module that is not there or fails."""
    import importlib

    for name in modules:
        try:
            if name.endswith(".py"):
                path = Path(name)
                if not path.is_file():
                    raise ConfigError(f"--model-module {name}: no such file")
                spec = importlib.util.spec_from_file_location(
                    f"digits_model_module_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                if str(Path.cwd()) not in sys.path and "" not in sys.path:
                    sys.path.insert(0, str(Path.cwd()))  # as `python -m` finds the user's code
                importlib.import_module(name)
        except ConfigError:
            raise
        except ModuleNotFoundError as e:
            raise ConfigError(f"--model-module {name}: no module named {e.name!r}") from None
        except Exception as e:  # noqa: BLE001 - the user's module failed: one line, its reason
            raise ConfigError(f"--model-module {name}: importing it failed: "
                              f"{type(e).__name__}: {_shorten(e)}") from None


def add_min_probability_argument(parser: argparse.ArgumentParser) -> None:
    """`--min-probability P`: below it a digit is read as uncertain (`?`)."""
    from digits.reading import MIN_PROBABILITY

    parser.add_argument("--min-probability", type=probability, default=MIN_PROBABILITY,
                        metavar="P",
                        help="a digit read with less probability is marked uncertain ('?' in "
                             f"the text, \"uncertain\": true in JSON) (default: {MIN_PROBABILITY})")


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """`--tta`: average each image's probabilities over a few shifted and turned copies."""
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="test-time augmentation: average each image's probabilities over "
                             "itself, one-pixel shifts and slight turns (7 predictions an "
                             "image; default: on, as it measured better on validation; "
                             "--no-tta predicts each image once)")


def add_callback_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("callbacks")
    group.add_argument("--callbacks", type=csv_list, action="extend", default=[], metavar="A,B",
                       help="registered callbacks to add to the defaults, by name")
    group.add_argument("--callback", action="append", default=[], metavar="SPEC",
                       help="a callback: NAME or package.module:Class, optionally with "
                            "literal arguments, e.g. 'confusion_matrix(every_n_epochs=2)' "
                            "(repeatable)")
    group.add_argument("--no-default-callbacks", action="store_true",
                       help="drop the default callbacks (TensorBoard, images, reports, progress)")
    group.add_argument("--list-callbacks", action="store_true",
                       help="list every registered callback and exit")


label_smoothing = setting_type("label_smoothing", "a label smoothing in [0, 0.5]")
ema_decay = setting_type("ema_decay", "a decay in (0, 0.9999]")
swa_lr = setting_type("swa_lr", "a learning rate in (0, 10]")
probability = number_type(float, 0.0, 1.0, label="a probability in [0, 1]")


def _setting_fields():
    import dataclasses

    return {f.name: f for f in dataclasses.fields(settings.TrainerSettings)}


def setting_flags(command: str) -> list[str]:
    """The settings `command` ("train" or "tune") offers as flags, in their declared order
    (`--seed` is among the data flags)."""
    return [name for name, f in _setting_fields().items()
            if f.metadata["flag"] and name != "seed"
            and (command == "train" or f.metadata["tune"])]


_PARSERS = {
    "count": lambda name, label: positive_int,
    "range": lambda name, label: setting_type(name, label),
    "auto_or_count": lambda name, label: steps_per_execution,
    "batch_range": lambda name, label: batch_range,
    "path": lambda name, label: non_empty,
}


def add_setting_argument(group, name: str, default=None, type=None, help: str | None = None):
    """The flag of the Trainer setting `name`, made from its declaration
    (`digits.engine.config.setting`): flag, type, range, default and help. `default`, `type`
    and `help` replace the declared ones where a command needs its own."""
    field = _setting_fields()[name]
    meta = field.metadata
    value = field.default if default is None else default
    if value is None and meta["none_word"]:
        value = meta["none_word"]
    kwargs = {"default": value, "help": (help or meta["help"]).format(default=field.default)}
    if meta["parse"] == "switch":
        kwargs["action"] = "store_true"
    elif meta["parse"] == "choice":
        kwargs["choices"] = [meta["none_word"] if c is None else c for c in meta["choices"]]
    else:
        kwargs["type"] = type or _PARSERS[meta["parse"]](name, meta["label"])
        kwargs["metavar"] = meta["metavar"]
    group.add_argument(meta["flag"], **kwargs)


def settings_from_args(args: argparse.Namespace) -> dict:
    """The Trainer settings the parsed flags give (each setting whose flag the command has),
    as keyword arguments for `Trainer`."""
    given = vars(args)
    chosen = {}
    for name, field in _setting_fields().items():
        meta = field.metadata
        dest = meta["flag"] and meta["flag"].lstrip("-").replace("-", "_")
        if dest and dest in given:
            value = given[dest]
            chosen[name] = None if meta["none_word"] and value == meta["none_word"] else value
    return chosen


def add_trainer_arguments(parser: argparse.ArgumentParser, epochs_default: int | None,
                          epochs_help: str | None = None) -> None:
    """`digits.train`'s training flags: every setting that has one, then where runs go.
    `epochs_default` None: the command decides once it knows the data (`epochs_help` says how)."""
    group = parser.add_argument_group("training")
    for name in setting_flags("train"):
        if name == "max_epochs":
            add_setting_argument(group, name, default=epochs_default,
                                 help=f"epochs to train ({epochs_help or f'default: {epochs_default}'})")
        elif name == "learning_rate":
            add_setting_argument(
                group, name, type=learning_rate_or_auto,
                help="initial learning rate, decayed by a cosine schedule, or auto: the "
                     "suggestion of a learning-rate range test run first (default: {default:g})")
            group.add_argument("--find-lr", action="store_true",
                               help="run the learning-rate range test only: plot the loss "
                                    "against the learning rate (PNG, TensorBoard), print the "
                                    "suggestion, exit")
        else:
            add_setting_argument(group, name)
    group.add_argument("--log-dir", type=non_empty, default="logs", metavar="DIR",
                       help="root of all runs (default: logs)")
    group.add_argument("--no-resume", action="store_true",
                       help="always start a fresh run, even if the last identical one was cut off")


def add_shared_training_arguments(group) -> None:
    """The training flags `digits.tune` offers too (its trials and final retraining): the
    settings declared with `tune=True`."""
    for name in setting_flags("tune"):
        add_setting_argument(group, name)


# ----------------------------------------------------------------------------- TOML config


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`, taking defaults from `--config FILE.toml` whose keys mirror the flags.

    Flags given on the command line override the file. Unknown keys and values of the wrong
    type are errors, checked with the same rules as the flags themselves.
    """
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return _one_dataset_is_a_string(args)
    config = load_toml(path)
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    defaults = {}
    for key, value in config.items():
        dest = key.replace("-", "_")
        if dest not in actions:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: "
                              f"{', '.join(sorted(k.replace('_', '-') for k in actions))}")
        _check_no_nul(f"{path}: {key}", value)
        defaults[dest] = _config_value(path, key, value, actions[dest])
    parser.set_defaults(**defaults)
    return _one_dataset_is_a_string(parser.parse_args(argv))


def _one_dataset_is_a_string(args: argparse.Namespace) -> argparse.Namespace:
    """`--dataset` given once is the string it always was (in config.json too)."""
    if hasattr(args, "_datasets_given"):
        del args._datasets_given
    if isinstance(getattr(args, "dataset", None), list) and len(args.dataset) == 1:
        args.dataset = args.dataset[0]
    return args


def load_toml(path: str) -> dict:
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{path}: no such config file")
    if not file.is_file():
        raise ConfigError(f"{path}: not a file")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {file.stat().st_size} bytes is too large for a config file")
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None


def _check_no_nul(where: str, value) -> None:
    # TOML strings may hold "\u0000", which no path or name can contain.
    if isinstance(value, str) and "\0" in value:
        raise ConfigError(f"{where} contains a NUL character")
    if isinstance(value, list):
        for item in value:
            _check_no_nul(where, item)


def _config_value(path: str, key: str, value, action: argparse.Action):
    where = f"{path}: {key}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(action, _DatasetSpecs) and isinstance(value, str):
        value = [value]  # `dataset = "mine"` as well as `dataset = ["mine", "mnist-5k"]`
    if isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        if action.type is not None:
            items = []
            for v in value:
                converted = _convert(where, action, v)
                # `extend` flags parse one string into a list (`--callbacks a,b`); `append`
                # flags parse it into one item, which may itself be a tuple (`--hp k=v`).
                if isinstance(action, argparse._ExtendAction):
                    items.extend(converted)
                else:
                    items.append(converted)
            return items
        return value
    if action.nargs in ("*", "+"):
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_convert(where, action, str(v)) for v in value]
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise ConfigError(f"{where} has the wrong type: {value!r}")
    if (action.type is int or getattr(action.type, "whole", False)) and isinstance(value, float):
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    converted = _convert(where, action, str(value))
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return converted


def _convert(where: str, action: argparse.Action, text: str):
    if action.type is None:
        return text
    try:
        return action.type(text)
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"{where} {e}") from None


# ----------------------------------------------------------------------------- running


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the user's terminal (unless they set it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() not in ("", "0")
    if quiet and "tensorflow" not in sys.modules \
            and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


# absl's notices from before its logging is set up, which TF_CPP_MIN_LOG_LEVEL does not reach
# ("I0000 00:00:1795622192.290386   14616 cudart_stub.cc:31] Could not find cuda drivers ...").
_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.-]+:\d+\] ")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Filters absl's start-up notices out of stderr while `import tensorflow` loads its libraries.

    Without it, every command that touches TensorFlow opens with four lines about CUDA on a
    machine without a GPU, and an `error:` line is no longer the only thing on stderr. Anything
    else written to stderr during the import is passed on.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # only the first import, and never recursively
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _startup_noise_filtered():
            self._loader.exec_module(module)


@contextlib.contextmanager
def _startup_noise_filtered():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if not _STARTUP_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, `kill`, a container stopping): handled as Ctrl-C is, so a run
    keeps its state and a search's chief stops its workers, then the command exits 143."""


def _terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs, SIGTERM raises `Terminated` (only where Python's default action,
    dying at once, is still in place, and on the main thread, where handlers live)."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI body, turning errors into exit codes: usage 2, failure 1, Ctrl-C 130, SIGTERM
    143."""
    quiet_tensorflow()
    try:
        with _sigterm_as_interrupt():
            return int(main(argv) or 0)
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"\n{what}: state up to the last finished epoch is saved; run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(e, RunFailure) else EXIT_USAGE
    except BrokenPipeError:
        return EXIT_FAILURE
    except OSError as e:
        # A path the checks above did not foresee (a name too long, a vanished mount, a full
        # disk): still the user's environment, still one line.
        where = f"{_shorten(e.filename)}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE


def _shorten(value, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def entry_point(main: Callable[[list[str] | None], int | None]) -> Callable[[], None]:
    """A console-script function for `main`."""

    def console_script() -> None:
        raise SystemExit(run_main(main))

    return console_script
