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
