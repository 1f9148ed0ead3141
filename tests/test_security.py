"""The source tree never runs user text as code and never loads anything in an unsafe mode.

A grep, so that a later change cannot quietly bring back `eval`, a pickle, or a model loaded
with Keras safe mode off; and the TensorBoard helpers serve this machine only by default.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

SOURCE_DIRS = ("digits", "callbacks", "tuner", "scripts", "examples")

FORBIDDEN = {
    "eval(": re.compile(r"(?<![\w.])eval\s*\("),
    "exec(": re.compile(r"(?<![\w.])exec\s*\("),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "safe_mode=False": re.compile(r"safe_mode\s*=\s*False"),
    "enable_unsafe_deserialization": re.compile(r"enable_unsafe_deserialization"),
    "pickle.load": re.compile(r"\b(c?pickle|dill|joblib)\.loads?\s*\("),
    "yaml.load": re.compile(r"\byaml\.(unsafe_)?load\s*\("),
    "shell=True": re.compile(r"shell\s*=\s*True"),
    "os.system": re.compile(r"\bos\.(system|popen)\s*\("),
}


def source_lines():
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]  # a comment may name what it avoids
                yield path.relative_to(ROOT), number, code


@pytest.mark.parametrize("name", FORBIDDEN)
def test_the_source_tree_never_uses(name):
    pattern = FORBIDDEN[name]
    found = [f"{path}:{number}: {code.strip()}" for path, number, code in source_lines()
             if pattern.search(code)]
    assert not found, "\n".join(found)


def test_every_load_is_in_its_safe_mode():
    unsafe = []
    for path, number, code in source_lines():
        if re.search(r"\bnp\.load\s*\(|\bnumpy\.load\s*\(", code) and "allow_pickle=False" not in code:
            unsafe.append(f"{path}:{number}: np.load without allow_pickle=False")
        if re.search(r"saving\.load_model\s*\(", code) and "safe_mode=True" not in code:
            unsafe.append(f"{path}:{number}: keras load_model without safe_mode=True")
    assert not unsafe, "\n".join(unsafe)
    assert any("safe_mode=True" in code for _, _, code in source_lines())


def test_pillow_refuses_decompression_bombs_instead_of_warning():
    from PIL import Image

    from digits.reading import images

    assert images.MAX_PIXELS <= 89_478_485  # Pillow's own default limit
    text = (ROOT / "digits" / "reading" / "images.py").read_text()
    assert 'simplefilter("error", Image.DecompressionBombWarning)' in text
    assert Image.DecompressionBombWarning is not None


def test_tensorboard_helpers_bind_loopback_unless_told_otherwise():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tb_launcher", ROOT / "scripts" / "tensorboard.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    assert launcher.DEFAULT_HOST == "127.0.0.1"
    command = launcher.tensorboard_command("logs", 6006)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    for path, _, code in source_lines():
        assert "0.0.0.0" not in code or "--host 0.0.0.0" in code, path
        assert "bind_all" not in code, path
