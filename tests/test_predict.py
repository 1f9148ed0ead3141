"""`digits.predict` end to end, as a user runs it: photos, boards, ruled paper and whole numbers.

A small CNN is trained once on the embedded digits; the photo-like images are made from the
digits it held out, written as JPEG and PNG files, and read through the real command.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_images import iou


@pytest.fixture(scope="module")
def model_path(reader_model):
    return reader_model


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory, mnist5k):
    """Photo-like images of the digits the model never saw, with their true readings."""
    from scripts import photos

    directory = tmp_path_factory.mktemp("photos")
    files = []
    for kind, count in (("photo", 8), ("board", 4), ("ruled", 4), ("number", 8)):
        for seed in range(count):
            sample = photos.make_sample(kind, mnist5k.test.x, mnist5k.test.y, seed=100 + seed)
            files.append((str(sample.save(directory / f"{kind}-{seed}")), sample))
    return files


def test_photos_and_numbers_are_read_and_explained(model_path, photo_files, tmp_path):
    paths = [path for path, _ in photo_files]
    explain = tmp_path / "explain"
    proc = run_cli("digits.predict", "--model", model_path, "--json", "--explain", str(explain), *paths)
    assert proc.returncode == 0, proc.stderr[-2000:]
    entries = json.loads(proc.stdout)
    assert [e["image"] for e in entries] == paths
    singles = [(e, s) for e, (_, s) in zip(entries, photo_files, strict=True) if s.kind != "number"]
    numbers = [(e, s) for e, (_, s) in zip(entries, photo_files, strict=True) if s.kind == "number"]
    # A four-epoch model: the default's figures (98% of photos) are in BENCHMARKS.md; the old
    # pipeline read a third of such photos.
    assert sum(e["text"] == s.text for e, s in singles) >= 12, [(e["text"], s.text) for e, s in singles]
    assert sum(e["text"] == s.text for e, s in numbers) >= 5, [(e["text"], s.text) for e, s in numbers]
    for entry, sample in singles + numbers:
        assert entry["text"] == "".join(str(d["digit"]) for d in entry["digits"])
        if len(entry["digits"]) == len(sample.boxes):
            for digit, truth in zip(entry["digits"], sample.boxes, strict=True):
                assert iou(digit["box"], truth) > 0.5
        if len(entry["digits"]) == 1:
            assert entry["digit"] == entry["digits"][0]["digit"] and len(entry["top3"]) == 3
        else:
            assert "digit" not in entry
    from PIL import Image

    pictures = sorted(explain.iterdir())
    assert len(pictures) == len(paths) and all(p.name.endswith(".explain.png") for p in pictures)
    with Image.open(explain / f"{photo_files[-1][0].rsplit('/', 1)[1]}.explain.png") as picture:
        assert picture.format == "PNG" and picture.width > 300


def test_plain_output_marks_uncertain_digits(model_path, photo_files):
    number = next(path for path, sample in photo_files if sample.kind == "number")
    proc = run_cli("digits.predict", "--model", model_path, "--min-probability", "1.0", number)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.strip()
    reading = line.split(": ", 1)[1].split("  ")[0]
    assert set(reading) == {"?"} and line.count(" for ") == len(reading)


def test_a_batch_reads_what_it_can_and_names_each_image_it_cannot(model_path, photo_files, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160), 230, np.uint8)).save(blank)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = [path for path, _ in photo_files[:2]]
    proc = run_cli("digits.predict", "--model", model_path, "--json", good[0], str(blank),
                   str(broken), good[1])
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "blank.png" in errors[0] and "no digit found" in errors[0]
    assert "broken.jpg" in errors[1] and "Traceback" not in proc.stderr
    entries = json.loads(proc.stdout)
    assert [e["image"] for e in entries] == [good[0], str(blank), str(broken), good[1]]
    assert "text" in entries[0] and "text" in entries[3]
    assert set(entries[1]) == {"image", "error"} and set(entries[2]) == {"image", "error"}


def test_the_model_is_not_loaded_when_no_image_can_be_read(tmp_path):
    proc = run_cli("digits.predict", "--model", str(tmp_path / "missing.keras"),
                   str(tmp_path / "missing.png"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.png'}: no such file"]


def test_read_photos_measures_each_kind_as_json(model_path, tmp_path):
    import subprocess
    import sys

    from scripts.photos import sklearn_digits
    from tests.conftest import ROOT

    # Other writers' scans in UCI optdigits' own format (`--scans`): 20 real 8x8 digits.
    pictures, labels = sklearn_digits()
    scans = tmp_path / "optdigits.csv"
    scans.write_text("".join(",".join(map(str, [*p.astype(int).ravel(), y])) + "\n"
                             for p, y in zip(pictures[-20:], labels[-20:], strict=True)))
    out = tmp_path / "reading.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "read_photos.py"), "--model", model_path,
                           "--count", "6", "--kinds", "photo,number,scan", "--source",
                           "validation", "--each-once", "--scans", str(scans), "--markdown",
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["kind"] for r in report["summary"]] == ["photo", "number", "scan"]
    for run in report["runs"][model_path]:  # --each-once: every scan of the file, once
        assert run["images"] == (20 if run["kind"] == "scan" else 6)
        assert 0.0 <= run["accuracy"] <= 1.0 and run["find_ms_median"] > 0
    assert "| photo |" in proc.stdout and "| number |" in proc.stdout


def test_read_photos_reads_optdigits_with_or_without_its_header(tmp_path):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("read_photos", ROOT / "scripts" / "read_photos.py")
    read_photos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(read_photos)
    rows = ["0,1,6,15,12,1,0,0," + ",".join(["3"] * 56) + ",7", ",".join(["16"] * 64) + ",1"]
    for name, text in (("plain.csv", "\n".join(rows) + "\n"),
                       ("header.csv", ",".join([f"Block {i}" for i in range(1, 65)] + ["Class"])
                        + "\n" + "\n".join(rows))):
        (tmp_path / name).write_text(text)
        images, labels = read_photos.optdigits(str(tmp_path / name))
        assert images.shape == (2, 8, 8) and labels.tolist() == [7, 1]
        assert images[0, 0, :3].tolist() == [0.0, 1.0, 6.0] and images[1].max() == 16.0
    (tmp_path / "short.csv").write_text("1,2,3\n")
    with pytest.raises(SystemExit, match="65 comma-separated numbers"):
        read_photos.optdigits(str(tmp_path / "short.csv"))
