"""Datasets: every spec, read from real files, split the way we promise."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from digits.callbacks import Callback
from digits.data import (
    FASHION_MNIST_DIR,
    Split,
    load_dataset,
    load_idx,
    load_idx_directory,
    load_npz,
    make_pipeline,
    stratified_split,
)
from digits.errors import DatasetError


def write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_embedded_digits_split_is_stratified_shuffled_and_disjoint(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (4050, 450, 500)
    for split in (mnist5k.train, mnist5k.val, mnist5k.test):
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (28, 28, 1)
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        counts = np.bincount(split.y, minlength=10)
        assert counts.max() - counts.min() <= 1, counts  # stratified: every class equally
        assert not (np.diff(split.y) >= 0).all()  # shuffled, not sorted by class
    flat = {s: {a.tobytes() for a in getattr(mnist5k, s).x} for s in ("train", "val", "test")}
    assert not flat["train"] & flat["val"] and not flat["train"] & flat["test"]
    assert not flat["val"] & flat["test"]


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = (load_dataset("mnist-5k", seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.val.y, b.val.y) and np.array_equal(a.val.x, b.val.x)
    assert not np.array_equal(a.val.x, c.val.x)


def test_official_test_set_as_separate_test_dataset(official_test_dir):
    data = load_dataset("mnist-5k", test_dataset=str(official_test_dir))
    assert (len(data.train), len(data.val), len(data.test)) == (4500, 500, 10000)
    assert np.bincount(data.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert "tested on" in data.description


def test_test_only_directory_has_no_training_part(official_test_dir):
    data = load_dataset(str(official_test_dir))
    assert data.train is None and data.val is None and len(data.test) == 10000


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_idx_files():
    data = load_dataset("fashion-mnist")
    assert len(data.train) + len(data.val) == 60000 and len(data.test) == 10000
    assert data.class_names[9] == "Ankle boot"


def test_idx_directory_written_by_hand_round_trips(tmp_path, mnist5k):
    x = (mnist5k.train.x[:50, ..., 0] * 255).round().astype(np.uint8)
    y = mnist5k.train.y[:50]
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:20], gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:20], gz=True)
    train, test = load_idx_directory(tmp_path)
    assert np.array_equal(train.y, y) and np.allclose(train.x[..., 0], x / 255.0)
    assert len(test) == 20
    data = load_dataset(str(tmp_path), validation_split=0.2)
    assert len(data.train) == 40 and len(data.val) == 10 and len(data.test) == 20


def test_npz_round_trip_and_test_only(tmp_path, mnist5k):
    x = (mnist5k.train.x[:40, ..., 0] * 255).astype(np.uint8)
    y = mnist5k.train.y[:40]
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    train, test = load_npz(tmp_path / "d.npz")
    assert len(train) == 40 and len(test) == 10
    np.savez(tmp_path / "t.npz", x_test=x[:10].reshape(10, 784), y_test=y[:10])
    train, test = load_npz(tmp_path / "t.npz")
    assert train is None and test.x.shape == (10, 28, 28, 1)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x00\x01" + b[2:], "magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "element type"),
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b[:3] + b"\x02" + b[4:], "dimensions"),
    (lambda b: b[:7], "header"),
])
def test_malformed_idx_is_refused(tmp_path, mutate, message):
    path = tmp_path / "x-images"
    write_idx(path, np.zeros((3, 28, 28), dtype=np.uint8))
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(DatasetError, match=message):
        load_idx(path)


def test_labels_out_of_range_are_refused(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 2, 11]))
    with pytest.raises(DatasetError, match="0-9"):
        load_idx_directory(tmp_path)


def test_unknown_spec_names_the_choices():
    with pytest.raises(DatasetError, match="mnist-5k"):
        load_dataset("mnist-6k")


def test_stratified_split_refuses_impossible_fractions(mnist5k):
    tiny = Split(mnist5k.train.x[:5], mnist5k.train.y[:5])
    with pytest.raises(DatasetError):
        stratified_split(tiny, 0.1, 0)


def test_training_pipeline_orders_each_epoch_from_seed_and_epoch(small_data):
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64)
    ds = make_pipeline(small_data.train, 64, shuffle=True, seed=3, epoch=epoch)
    first = np.concatenate([y.numpy() for _, y in ds])
    again = np.concatenate([y.numpy() for _, y in ds])
    epoch.assign(1)
    second = np.concatenate([y.numpy() for _, y in ds])
    assert np.array_equal(first, again)          # epoch 0 is always the same order
    assert not np.array_equal(first, second)     # epoch 1 is another order
    assert sorted(first) == sorted(small_data.train.y.tolist())  # each epoch sees every image once


@pytest.mark.parametrize("shuffle", [True, False])
def test_pipelines_run_without_tf_data_autotuning_and_yield_every_image(small_data, shuffle):
    # Autotuning leaves a thread behind each epoch's iterator whose teardown stalled the
    # next epoch's first step by seconds; the pipeline's fixed settings need no tuning.
    ds = make_pipeline(small_data.val, 100, shuffle=shuffle, seed=1)
    assert ds.options().autotune.enabled is False
    labels = np.concatenate([y.numpy() for _, y in ds])
    images = np.concatenate([x.numpy() for x, _ in ds])
    assert [len(y) for _, y in ds] == [100, 100, 56]
    assert sorted(labels.tolist()) == sorted(small_data.val.y.tolist())
    if not shuffle:
        np.testing.assert_array_equal(images, small_data.val.x)


def keras_npz_stand_in(tmp_path, train: Split, test: Split) -> tuple[list, object]:
    """What `keras.utils.get_file` hands a user with internet: the path of mnist.npz in Keras'
    cache, here made of `train` and `test` in Keras' layout (uint8 images (N, 28, 28), uint8
    labels); `asked` records what each call asked for."""

    def raw(split):
        return (split.x[..., 0] * 255).round().astype(np.uint8), split.y.astype(np.uint8)

    path = tmp_path / "mnist.npz"
    (x_train, y_train), (x_test, y_test) = raw(train), raw(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    asked = []

    def get_file(fname, origin=None, file_hash=None, **kwargs):
        asked.append((fname, origin, file_hash))
        return str(path)

    return asked, get_file


def keras_cache_stand_in(tmp_path, mnist5k, official_test_dir) -> tuple[list, object]:
    """Keras' mnist.npz made from real digits: the embedded 5,000 for training, the official
    10,000 for testing."""
    return keras_npz_stand_in(tmp_path, mnist5k.train, load_idx_directory(official_test_dir)[1])


def test_auto_and_mnist_read_full_mnist_as_keras_fetches_it(tmp_path, mnist5k, official_test_dir,
                                                            monkeypatch):
    """The path a user with internet runs: the file Keras' own loader fetches, read here."""
    import inspect

    import keras

    asked, get_file = keras_cache_stand_in(tmp_path, mnist5k, official_test_dir)
    monkeypatch.setattr(keras.utils, "get_file", get_file)
    for spec in ("auto", "mnist"):
        data = load_dataset(spec, announce=False)
        assert data.name == "mnist" and not data.notices
        assert len(data.train) + len(data.val) == len(mnist5k.train) and len(data.test) == 10_000
    fname, origin, sha256 = asked[0]
    source = inspect.getsource(keras.datasets.mnist.load_data)  # the same file as Keras'
    assert fname == "mnist.npz" and origin.rsplit("/", 1)[0] in source and sha256 in source


# The whole MNIST (60,000 + 10,000, the published bytes) where this project keeps it beside the
# repository; a clone alone gets the embedded 5,000 twelve times over instead (the same sizes).
FULL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-full"


class StopAfter(Callback):
    """Ends a fit after `epochs` epochs, whatever the run planned."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


def full_mnist_stand_in(tmp_path, mnist5k, official_test_dir):
    """`keras.utils.get_file` for a user whose Keras has downloaded full MNIST: mnist.npz of
    60,000 training digits, the real ones where this machine has them (and, to test quickly,
    the first 1,000 of the official test digits)."""
    test = load_idx_directory(official_test_dir)[1]
    if (FULL_MNIST / "train-images-idx3-ubyte.gz").exists():
        train = load_idx_directory(FULL_MNIST)[0]
    else:
        whole = Split(np.concatenate([mnist5k.train.x, mnist5k.val.x, mnist5k.test.x]),
                      np.concatenate([mnist5k.train.y, mnist5k.val.y, mnist5k.test.y]))
        train = Split(np.tile(whole.x, (12, 1, 1, 1)), np.tile(whole.y, 12))
    return keras_npz_stand_in(tmp_path, train, Split(test.x[:1000], test.y[:1000]))[1]


def test_auto_on_full_mnist_trains_the_epochs_its_size_calls_for(tmp_path, mnist5k,
                                                                 official_test_dir, monkeypatch,
                                                                 capsys):
    """What `python -m digits.train` and `digits.tune --dataset mnist` do on a machine with
    internet (a batch an epoch): 60,000 digits, so 16 epochs, not the 5,000-digit recipe's 40, and
    they say so; --epochs wins."""
    import json

    import keras

    from digits import train, tune

    monkeypatch.setattr(keras.utils, "get_file", full_mnist_stand_in(tmp_path, mnist5k,
                                                                     official_test_dir))
    quick = ["--limit-train-batches", "1", "--limit-val-batches", "1", "--no-default-callbacks",
             "--no-tta", "--log-dir", str(tmp_path / "logs")]
    assert train.main([*quick, "--callback", "tests.test_data:StopAfter(epochs=2)"]) == 0
    err = capsys.readouterr().err
    assert "notice: 54,000 training images: 16 epochs, the default for this many" in err, err
    run = tmp_path / "logs" / "cnn" / "version_0"
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["train"] == 54_000 and config["trainer"]["max_epochs"] == 16
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["max_epochs"], metrics["epochs_completed"]) == (16, 2)
    assert train.main([*quick, "--epochs", "2", "--name", "two"]) == 0
    assert "training images:" not in capsys.readouterr().err
    two = json.loads((tmp_path / "logs" / "two" / "version_0" / "config.json").read_text())
    assert two["trainer"]["max_epochs"] == 2
    # The main job on it (`digits.tune --dataset mnist`): its final retraining follows the size too.
    assert tune.main(["--dataset", "mnist", "--max-trials", "1", "--max-epochs", "1",
                      "--parallel-trials", "1", "--final-ensemble", "1", *quick[:6],
                      "--hp", "filters=8", "--callback", "tests.test_data:StopAfter(epochs=1)",
                      "--directory", str(tmp_path / "search")]) == 0
    out, err = capsys.readouterr()
    assert "notice: 54,000 training images: 16 final epochs" not in err
    assert "54,000 training images: 16 epochs" in err and "--final-epochs N to choose" in err, err
    assert "for 16 epochs on the same training split" in out, out[-2000:]


def test_a_failed_download_falls_back_or_is_one_clear_line(tmp_path, monkeypatch):
    import keras

    def get_file(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- timed out")

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    data = load_dataset("auto", announce=False)
    assert data.name == "mnist-5k" and "full MNIST is not available" in data.notices[0]
    with pytest.raises(DatasetError, match=r"^cannot load mnist through Keras: Exception: URL "
                                           r"fetch failure"):
        load_dataset("mnist")


def test_a_damaged_keras_cache_is_one_clear_line(tmp_path, mnist5k, official_test_dir,
                                                 monkeypatch, capsys):
    import keras

    from digits import train

    asked, get_file = keras_cache_stand_in(tmp_path, mnist5k, official_test_dir)
    whole = (tmp_path / "mnist.npz").read_bytes()
    (tmp_path / "mnist.npz").write_bytes(whole[: len(whole) // 2])  # cut off half-way
    monkeypatch.setattr(keras.utils, "get_file", get_file)
    code = train.main(["--dataset", "mnist", "--epochs", "1", "--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'mnist.npz'}: not a readable .npz file")
    assert not (tmp_path / "logs").exists()
