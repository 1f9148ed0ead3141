"""The README's promises: two quick-start commands, the same test command CI runs."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_quick_start_is_two_commands_main_job_then_tests():
    commands = quick_start_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "python -m digits.tune" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci


def test_readme_has_no_unfilled_sections():
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"\b[A-Z]+_(TABLE|SECTION)\b", readme)


def test_the_readme_callback_example_runs_as_written(tmp_path, small_data, capsys, monkeypatch):
    readme = (ROOT / "docs" / "callbacks.md").read_text()  # the README's guide to callbacks
    section = readme.split("## Writing your own", 1)[1]
    code = re.search(r"```python\n(.*?)\n```", section, re.S).group(1)
    assert len(code.strip().splitlines()) < 20 + 2  # "in under 20 lines", the path comment aside
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "slack.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))

    from digits.callbacks.registry import create
    from digits.engine.trainer import Trainer

    callback = create('mypkg.slack:BestSoFar(prefix="best")')
    trainer = Trainer(max_epochs=2, callbacks=[callback], log_dir=tmp_path / "logs", verbose=False,
                      limit_train_batches=3)
    trainer.fit(trainer.build_model("mlp"), small_data)
    assert "best: " in capsys.readouterr().out
    assert callback.state_dict()["best"] == max(trainer.history["val_accuracy"])


def test_every_relative_link_of_the_readme_and_the_guides_exists():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to {target}"
