"""One import namespace: the checkout's callbacks/ and tuner/ install as digits.callbacks and
digits.tuner, and nothing else lands at the top level of site-packages."""

from __future__ import annotations

import configparser
import subprocess
import sys

from tests.conftest import ROOT

FOLDERS = {"digits": ROOT / "digits", "digits.callbacks": ROOT / "callbacks",
           "digits.tuner": ROOT / "tuner"}


def test_only_digits_is_importable_at_the_top_level(tmp_path):
    # From a folder that is not the checkout, as a user's script runs: what the install gives.
    probe = ("import importlib.util as u, digits.callbacks as c, digits.tuner as t\n"
             "print(u.find_spec('callbacks'), u.find_spec('tuner'))\n"
             "print(c.__file__)\nprint(t.__file__)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    missing, callbacks_file, tuner_file = done.stdout.splitlines()
    assert missing == "None None"
    assert callbacks_file == str(ROOT / "callbacks" / "__init__.py")
    assert tuner_file == str(ROOT / "tuner" / "__init__.py")


def test_setup_cfg_lists_every_package_folder():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    mapped = dict(line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines())
    assert mapped == {"digits.callbacks": "callbacks", "digits.tuner": "tuner"}
    on_disk = {".".join((package, *init.parent.relative_to(folder).parts))
               for package, folder in FOLDERS.items() for init in folder.rglob("__init__.py")}
    assert listed == on_disk


COMMANDS = {"digits.cli", "digits.train", "digits.tune", "digits.evaluate", "digits.predict",
            "digits.export", "digits.serve"}
# The command modules themselves: `python -m digits.<command>` and `python -m digits.callbacks`.
COMMAND_FILES = {ROOT / "digits" / f"{name.split('.')[1]}.py" for name in COMMANDS} | {
    ROOT / "callbacks" / "listing.py", ROOT / "callbacks" / "__main__.py"}


def imported_modules(path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_a_command():
    """Commands sit on top of the library; the library never imports one (not even lazily)."""
    offenders = {}
    for folder in FOLDERS.values():
        for path in folder.rglob("*.py"):
            if path not in COMMAND_FILES and (found := imported_modules(path) & COMMANDS):
                offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}


ADAPTERS = {ROOT / "digits" / "keras_internals.py", ROOT / "tuner" / "keras_tuner_internals.py"}
# Private names of Keras and keras-tuner that digits has needed: only the adapters use them.
PRIVATE = ("._flatten_layers", "_flat_metrics", "_model_variables_moving_average",
           "_trainable_variables", "keras_tuner.src", "_build_and_fit_model",
           "_try_run_and_update_trial", "_check_consecutive_failures", "_random_values")


def test_keras_and_keras_tuner_private_names_are_used_in_their_adapters_only():
    users = {}
    for folder in (*FOLDERS.values(), ROOT / "scripts"):
        for path in folder.rglob("*.py"):
            if path in ADAPTERS:
                continue
            text = path.read_text(encoding="utf-8")
            if found := [name for name in PRIVATE if name in text]:
                users[str(path.relative_to(ROOT))] = found
    assert users == {}
