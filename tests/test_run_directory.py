"""digits.runs.directory: version directories, the run's lock and the log directory check."""

from __future__ import annotations

import concurrent.futures

import pytest

from digits.errors import RunDirectoryError
from digits.runs.directory import RunDirectory, check_writable_dir, safe_name


def test_versions_count_up_and_the_latest_is_found(tmp_path):
    assert RunDirectory.latest(tmp_path, "cnn") is None
    runs = [RunDirectory.create(tmp_path, "cnn") for _ in range(3)]
    assert [r.version for r in runs] == [0, 1, 2]
    (tmp_path / "cnn" / "notes").mkdir()  # not a version: ignored
    assert RunDirectory.latest(tmp_path, "cnn").path == runs[-1].path


def test_concurrent_creators_never_share_a_version(tmp_path):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: RunDirectory.create(tmp_path, "x").path, range(16)))
    assert len(set(paths)) == 16


def test_one_holder_of_a_runs_lock_at_a_time(tmp_path):
    run = RunDirectory.create(tmp_path, "cnn")
    other = RunDirectory(run.path)
    assert run.try_lock() and run.try_lock()  # idempotent for its holder
    assert not other.try_lock()
    run.unlock()
    assert other.try_lock()
    other.unlock()


def test_json_files_are_written_whole_and_read_leniently(tmp_path):
    run = RunDirectory.create(tmp_path, "cnn")
    run.write_json("metrics.json", {"status": "running"})
    assert run.read_json("metrics.json") == {"status": "running"}
    run.file("broken.json").write_text('{"status": ')
    assert run.read_json("broken.json") is None and run.read_json("absent.json") is None


def test_a_log_dir_that_cannot_hold_runs_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file"):
        check_writable_dir(tmp_path / "file" / "logs")
    check_writable_dir(tmp_path / "new" / "deeper")  # not there yet, but creatable
    assert not (tmp_path / "new").exists()


def test_a_model_name_becomes_a_safe_run_name():
    assert safe_name("my model/v2") == "my_model_v2" and safe_name("") == "model"
