"""The codebase stays ruff-clean (configuration in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import ROOT


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is part of the test extra: pip install -e '.[test]'"
    proc = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
