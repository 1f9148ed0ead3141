"""The benchmark runs: a quick start-up section, written as JSON. Nothing here times anything."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_startup_section_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", "--only", "startup", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sections_run"] == ["startup"]
    startup = result["sections"]["startup"]
    assert startup["help_imports_tensorflow"] is False
    assert startup["first_step"]["first_step"] >= startup["first_step"]["imported"] > 0
    assert result["machine"]["cores"] >= 1 and result["goals"]
