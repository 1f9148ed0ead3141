"""Your own labelled images as a dataset (class folders, split folders, Kaggle's CSV): read as
`digits.predict` reads a photo, skipped files named, cached by content, hostile folders refused
in one line. Real digits: the embedded MNIST digits, written as MNIST-style PNGs and as
photographed-paper-like JPEGs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digits.errors import DatasetError


def paper_photo(digit: np.ndarray, rng, size=(150, 130)) -> Image.Image:
    """A digit as a photo of paper: dark ink, larger, on grey uneven paper with sensor noise."""
    big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((96, 96),
                                                                            Image.BILINEAR)) / 255
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paper = 0.75 + 0.1 * xx / w + rng.normal(0, 0.02, (h, w))
    top, left = int(rng.integers(10, h - 106)), int(rng.integers(10, w - 106))
    paper[top:top + 96, left:left + 96] -= 0.65 * big
    return Image.fromarray(np.clip(paper * 255, 0, 255).astype(np.uint8)).convert("RGB")


def write_folder(root: Path, split, per_class: int, seed: int = 0, start: int = 0) -> dict:
    """Class folders of real digits, a third as MNIST-style 28x28 PNGs, the rest as JPEG photos.
    Returns {relative path: (label, the digit)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for c in range(10):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(np.flatnonzero(split.y == c)[start:start + per_class]):
            digit = split.x[i, :, :, 0]
            if k % 3 == 0:
                name = f"{c}/mnist{k}.png"
                Image.fromarray(np.rint(digit * 255).astype(np.uint8)).save(root / name)
            else:
                name = f"{c}/photo{k}.jpg"
                paper_photo(digit, rng).save(root / name, quality=90)
            written[name] = (c, digit)
    return written


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_class_folder_reads_as_mnist_style_digits_and_28x28_inputs_bit_identical(
        mnist5k, tmp_path, cache):
    from digits.reading.folders import read_folder

    written = write_folder(tmp_path / "mine", mnist5k.test, per_class=6)
    images = read_folder(tmp_path / "mine", workers=1)
    x, y = images.splits["train"]
    assert images.skipped == () and len(y) == 60 and np.bincount(y).tolist() == [6] * 10
    assert images.read == 60 and images.cached == 0
    # In file order: class folders, then names; each read digit resembles the one drawn.
    names = sorted(written, key=lambda n: (int(n.split("/")[0]), n.split("/")[1]))
    for name, got in zip(names, x, strict=True):
        label, digit = written[name]
        if "mnist" in name:
            assert np.array_equal(got, np.rint(digit * 255).astype(np.uint8))  # bit-identical
        else:
            assert np.corrcoef(got.ravel() / 255.0, digit.ravel())[0, 1] > 0.6, name
    again = read_folder(tmp_path / "mine", workers=1)
    assert again.read == 0 and again.cached == 60
    assert np.array_equal(again.splits["train"][0], x)
    # A changed file is read again; the rest come from the cache.
    paper_photo(mnist5k.test.x[0, :, :, 0], np.random.default_rng(9)).save(
        tmp_path / "mine" / "3" / "photo1.jpg", quality=90)
    changed = read_folder(tmp_path / "mine", workers=2)
    assert changed.read == 1 and changed.cached == 59


def test_hostile_files_are_skipped_and_named_and_hostile_folders_refused(mnist5k, tmp_path,
                                                                          cache):
    from digits.reading import folders

    root = tmp_path / "hostile"
    write_folder(root, mnist5k.test, per_class=1)
    (root / "5" / "mnist0.png").unlink()  # an empty class
    (root / "README.md").write_text("my digits")
    (root / "1" / "notes.txt").write_text("not an image")
    (root / "1" / "empty.png").write_bytes(b"")
    two = np.zeros((28, 60), np.uint8)
    two[:, :28], two[:, 32:] = np.rint(mnist5k.test.x[0, :, :, 0] * 255), \
        np.rint(mnist5k.test.x[1, :, :, 0] * 255)
    Image.fromarray(255 - two).resize((240, 112)).save(root / "2" / "two.png")
    Image.new("L", (100, 100), 255).save(root / "2" / "blank.png")
    Image.new("1", (10000, 5000)).save(root / "3" / "bomb.png")  # 50 megapixels, 6 KB
    (root / "3" / "huge.png").write_bytes(b"\0" * (51 * 1024 * 1024))
    (root / "4" / "passwd.png").symlink_to("/etc/passwd")
    (root / "6" / "gone.png").symlink_to(root / "6" / "nowhere.png")
    (root / "7" / "sub").mkdir()
    images = folders.read_folder(root, workers=1)
    skipped = dict(images.skipped)
    assert set(skipped) == {"README.md", "1/notes.txt", "1/empty.png", "2/two.png",
                            "2/blank.png", "3/bomb.png", "3/huge.png", "4/passwd.png",
                            "6/gone.png", "7/sub"}
    assert skipped["2/two.png"].startswith("2 digits found")
    assert skipped["2/blank.png"].startswith("no digit found")
    assert "exceeds the limit" in skipped["3/bomb.png"] or "refused" in skipped["3/bomb.png"]
    assert "too large" in skipped["3/huge.png"] and "link out of" in skipped["4/passwd.png"]
    assert skipped["1/empty.png"] == "empty file" and "not a readable image" in skipped["1/notes.txt"]
    assert len(images.splits["train"][1]) == 9 and ("train", 5) in images.empty_classes
    with pytest.raises(DatasetError, match=r"--strict"):
        folders.read_folder(root, strict=True, workers=1)
    (root / "cats").mkdir()
    with pytest.raises(DatasetError, match=r"cats: class folders must be named 0 to 9"):
        folders.read_folder(root)
    os.rmdir(root / "cats")
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DatasetError, match="class folders must be named"):
        folders.read_folder(root)


def test_too_many_files_is_refused_before_reading(mnist5k, tmp_path, cache, monkeypatch):
    from digits.reading import folders

    write_folder(tmp_path / "many", mnist5k.test, per_class=2)
    monkeypatch.setattr(folders, "MAX_FILES", 5)
    with pytest.raises(DatasetError, match="more than 5 files"):
        folders.read_folder(tmp_path / "many")


def test_split_folders_keep_their_splits(mnist5k, tmp_path, cache):
    from digits.data import load_dataset

    write_folder(tmp_path / "s" / "train", mnist5k.train, per_class=8)
    write_folder(tmp_path / "s" / "validation", mnist5k.val, per_class=3)
    write_folder(tmp_path / "s" / "test", mnist5k.test, per_class=2)
    data = load_dataset(str(tmp_path / "s"), announce=False)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 30, 20)
    assert "class folders" in data.description and data.skipped == ()
    only_train = tmp_path / "t"
    write_folder(only_train / "train", mnist5k.train, per_class=10)
    data = load_dataset(str(only_train), announce=False, validation_split=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (72, 18, 10)


def test_training_on_a_folder_end_to_end_names_what_it_skipped(mnist5k, tmp_path, cache,
                                                               capsys):
    """`digits.train --dataset DIR` on photos of real digits: trained, tested, the skipped
    files counted on the console and listed in the run directory; a bad folder is one line."""
    from digits import train

    root = tmp_path / "mine"
    write_folder(root, mnist5k.train, per_class=24)
    (root / "4" / "notes.txt").write_text("not an image")
    Image.new("L", (80, 80), 255).save(root / "8" / "blank.png")
    assert train.main(["--dataset", str(root), "--epochs", "1", "--limit-train-batches", "3",
                       "--no-default-callbacks", "--log-dir", str(tmp_path / "logs"),
                       "--batch-size", "32"]) == 0
    out, err = capsys.readouterr()
    assert "240 images read as digits (0 from the cache); 2 skipped" in err
    run = tmp_path / "logs" / "cnn" / "version_0"
    listed = (run / "skipped_images.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == ["4/notes.txt", "8/blank.png"]
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["skipped"] == 2 and config["data"]["train"] + config["data"]["val"] \
        + config["data"]["test"] == 240
    assert "test accuracy" in out
    (root / "cats").mkdir()
    assert train.main(["--dataset", str(root), "--epochs", "1",
                       "--log-dir", str(tmp_path / "logs2")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: {root / 'cats'}: class folders must be named 0 to 9 (the digit they hold)"]
    assert not (tmp_path / "logs2").exists()
    os.rmdir(root / "cats")
    assert train.main(["--dataset", str(root), "--strict", "--epochs", "1",
                       "--log-dir", str(tmp_path / "logs3")]) == 2
    assert "--strict" in capsys.readouterr().err and not (tmp_path / "logs3").exists()


def test_saved_digits_read_back_as_a_dataset(reader_model, mnist5k, tmp_path, cache, capsys):
    """predict --save-digits writes each found digit's input under the digit read; that folder
    is a dataset whose images are bit-identical to what the model read."""
    from digits import predict
    from digits.reading.folders import read_folder

    rng = np.random.default_rng(3)
    paths = []
    for i in range(20):
        path = tmp_path / f"photo{i}.jpg"
        paper_photo(mnist5k.test.x[i, :, :, 0], rng).save(path, quality=92)
        paths.append(str(path))
    assert predict.main(["--model", reader_model, "--json", "--save-digits",
                         str(tmp_path / "sorted"), *paths]) == 0
    readings = json.loads(capsys.readouterr().out)
    read = [r["digit"] for r in readings]
    assert np.mean(np.array(read) == mnist5k.test.y[:20]) >= 0.8
    images = read_folder(tmp_path / "sorted", workers=1)
    x, y = images.splits["train"]
    assert sorted(y.tolist()) == sorted(read) and images.skipped == ()
    assert x.shape == (20, 28, 28) and (x.max(axis=(1, 2)) > 100).all()
    saved = sorted((tmp_path / "sorted").rglob("*.png"))
    assert {p.name for p in saved} == {f"photo{i}-0.png" for i in range(20)}
    # Written again: nothing overwritten, a second copy beside the first.
    assert predict.main(["--model", reader_model, "--save-digits", str(tmp_path / "sorted"),
                         paths[0]]) == 0
    assert len(list((tmp_path / "sorted").rglob("photo0-0*.png"))) == 2


def kaggle_csv(path: Path, split, labelled: bool = True, n: int = 100) -> None:
    header = (["label"] if labelled else []) + [f"pixel{i}" for i in range(784)]
    rows = [",".join(header)]
    for x, y in zip(split.x[:n], split.y[:n], strict=True):
        pixels = [str(int(v)) for v in np.rint(x.ravel() * 255)]
        rows.append(",".join(([str(int(y))] if labelled else []) + pixels))
    path.write_text("\n".join(rows) + "\n")


def test_kaggle_csvs_train_and_answer(reader_model, mnist5k, tmp_path, capsys):
    from digits import predict
    from digits.data import load_dataset

    kaggle_csv(tmp_path / "train.csv", mnist5k.train, n=200)
    data = load_dataset(str(tmp_path / "train.csv"), announce=False)
    assert len(data.train) + len(data.val) + len(data.test) == 200
    assert np.array_equal(np.sort(np.concatenate([data.train.y, data.val.y, data.test.y])),
                          np.sort(mnist5k.train.y[:200]))
    kaggle_csv(tmp_path / "test.csv", mnist5k.test, labelled=False, n=50)
    answers = tmp_path / "submission.csv"
    assert predict.main(["--model", reader_model, "--csv", str(tmp_path / "test.csv"),
                         "--submission", str(answers)]) == 0
    lines = answers.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 51
    ids, labels = zip(*[map(int, line.split(",")) for line in lines[1:]], strict=True)
    assert list(ids) == list(range(1, 51))
    assert np.mean(np.array(labels) == mnist5k.test.y[:50]) >= 0.9


@pytest.mark.parametrize("damage, message", [
    (lambda rows: [rows[0].replace(",pixel783", "")] + rows[1:], "missing column pixel783"),
    (lambda rows: rows[:2] + [rows[2].rsplit(",", 1)[0]] + rows[3:], "line 3: 784 values"),
    (lambda rows: rows[:3] + [rows[3].replace(",0,", ",abc,", 1)] + rows[4:],
     "line 4: 'abc' is not a whole number"),
    (lambda rows: rows[:2] + ["12" + rows[2][1:]] + rows[3:], "line 3: label 12; expected 0-9"),
    (lambda rows: rows[:2] + [rows[2].replace(",0,", ",300,", 1)] + rows[3:],
     "line 3: pixel value 300; expected 0-255"),
])
def test_a_bad_kaggle_csv_is_one_line_naming_it(mnist5k, tmp_path, damage, message, capsys):
    from digits import train

    kaggle_csv(tmp_path / "train.csv", mnist5k.train, n=5)
    rows = (tmp_path / "train.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(damage(rows)) + "\n")
    assert train.main(["--dataset", str(tmp_path / "train.csv"),
                       "--log-dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "logs").exists()


def test_a_2gb_csv_is_refused_unread(tmp_path):
    from digits.data import load_dataset

    huge = tmp_path / "train.csv"
    with open(huge, "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GB on paper, nothing on disk
    with pytest.raises(DatasetError, match="larger than"):
        load_dataset(str(huge))


def test_fine_tuning_on_other_writers_folder_reads_them_better(reader_model, tmp_path, cache,
                                                                capsys):
    """The user's story: other writers' digits (scikit-learn's 8x8 scans, 13 writers, none of
    MNIST's) as a class folder -> `digits.train --init-from MODEL --dataset FOLDER` -> the other
    part of that set read better than by the model it started from; config.json names the
    parent model."""
    import hashlib

    from digits import train
    from scripts.finetune_writers import read_scans, write_scans
    from scripts.photos import sklearn_digits

    images, labels = sklearn_digits()
    write_scans(tmp_path / "writers", images[:500], labels[:500], seed=0)
    held_x, held_y = images[900:1400], labels[900:1400]
    before = read_scans(reader_model, held_x, held_y, seed=1)
    assert train.main(["--init-from", reader_model, "--dataset", str(tmp_path / "writers"),
                       "--epochs", "4", "--log-dir", str(tmp_path / "logs"),
                       "--no-default-callbacks", "--callbacks", "checkpoint"]) == 0
    err = capsys.readouterr().err
    assert "fine-tuning on 405 of your digits and 405 replayed from mnist-5k" in err
    run = tmp_path / "logs" / "finetune" / "version_0"
    after = read_scans(str(run / "model.keras"), held_x, held_y, seed=1)
    assert after >= before + 0.03, (before, after)
    config = json.loads((run / "config.json").read_text())
    assert config["init_from"] == str(Path(reader_model).resolve()) and config["replay"] == "mnist-5k"
    assert config["init_from_sha256"] == hashlib.sha256(Path(reader_model).read_bytes()).hexdigest()
    assert config["trainer"]["max_epochs"] == 4
    assert train.main(["--init-from", reader_model, "--dataset", str(tmp_path / "writers"),
                       "--hp", "filters=8"]) == 2
    assert "--hp does not apply" in capsys.readouterr().err


def test_mixed_datasets_train_on_their_union_and_report_each_ones_validation(mnist5k, tmp_path,
                                                                             cache, capsys):
    """`--dataset mine:x3 --dataset mnist-5k`: each split on its own, the union trained on (the
    user's training digits three times), validation accuracy per dataset on the console, in
    metrics.json and in TensorBoard."""
    from tensorboard.backend.event_processing import event_accumulator

    from digits import train
    from digits.data import load_dataset

    write_folder(tmp_path / "mine", mnist5k.test, per_class=20)
    data = load_dataset([f"{tmp_path / 'mine'}:x3", "mnist-5k"], announce=False)
    mine = data.sources[0]
    assert mine["name"] == "mine" and mine["repeat"] == 3 and mine["train"] >= 160
    assert len(data.train) == 3 * mine["train"] + 4050 and len(data.val) == mine["val"] + 450
    assert data.val_sources == (("mine", 0, mine["val"]), ("mnist-5k", mine["val"], len(data.val)))
    assert len(data.test) == 200 - len(data.skipped) - mine["train"] - mine["val"] + 500
    assert train.main(["--dataset", f"{tmp_path / 'mine'}:x3", "--dataset", "mnist-5k",
                       "--epochs", "2", "--limit-train-batches", "3", "--log-dir",
                       str(tmp_path / "logs"), "--no-default-callbacks", "--callbacks",
                       "tensorboard,rich_progress"]) == 0
    out, err = capsys.readouterr()
    epoch_lines = [line for line in (out + err).splitlines() if line.startswith("epoch 2/2")]
    assert "val_accuracy_mine" in epoch_lines[0] and "val_accuracy_mnist-5k" in epoch_lines[0]
    run = tmp_path / "logs" / "cnn" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history["val_accuracy_mine"]) == 2 and len(history["val_accuracy_mnist-5k"]) == 2
    # The whole's accuracy is the two parts', weighted by their sizes.
    whole = (mine["val"] * history["val_accuracy_mine"][-1]
             + 450 * history["val_accuracy_mnist-5k"][-1]) / len(data.val)
    assert abs(whole - history["val_accuracy"][-1]) < 0.02
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == [f"{tmp_path / 'mine'}:x3", "mnist-5k"]
    assert [s["repeat"] for s in config["data"]["sources"]] == [3, 1]
    events = event_accumulator.EventAccumulator(str(run / "validation"))
    events.Reload()
    tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    assert any("accuracy_mine" in t for t in tags), tags
