"""digits.speed.precision: "auto" picks bfloat16 only where the CPU has it; a bfloat16 model file
runs in float32 elsewhere, and exports in float32, with the same weights."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from digits.engine.trainer import Trainer
from digits.speed import precision


@pytest.fixture
def cpu(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bfloat16, with no GPU."""
    monkeypatch.setattr(precision, "tensorflow_sees_gpu", lambda: False)

    def set_native(native: bool):
        flags = frozenset({"avx2", "amx_bf16"} if native else {"avx2"})
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)

    return set_native


def test_auto_is_bfloat16_only_on_a_cpu_with_native_bfloat16(cpu):
    cpu(True)
    assert precision.resolve_precision("auto") == "mixed_bfloat16"
    assert precision.resolve_precision("float32") == "float32"  # an explicit choice stays
    cpu(False)
    assert precision.resolve_precision("auto") == "float32"
    assert precision.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_the_cpu_flags_are_read_from_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:  # Linux: every x86-64 CPU lists sse2, every ARM one fp or asimd
        assert flags & {"sse2", "fp", "asimd"}


def test_a_trainer_records_the_policy_auto_resolved_to(tmp_path, small_data, cpu):
    cpu(True)
    try:
        trainer = Trainer(max_epochs=1, callbacks=[], log_dir=tmp_path, limit_train_batches=2,
                          limit_val_batches=1, verbose=False)
        assert trainer.precision == "mixed_bfloat16"
        model = trainer.build_model("cnn", filters=4, conv_blocks=1, dense_units=16)
        assert model.get_layer("logits").dtype_policy.compute_dtype == "bfloat16"
        trainer.fit(model, small_data)
        config = json.loads(trainer.run.file("config.json").read_text())
        assert config["trainer"]["precision"] == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture(scope="module")
def bfloat16_file(tmp_path_factory, mnist5k):
    """A small cnn trained a few steps under mixed_bfloat16 and saved."""
    from digits.speed.fusion import fuse_batch_norm

    try:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
        from digits.models import build_model

        model = build_model("cnn", filters=4, conv_blocks=1, dense_units=16, seed=0)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    fuse_batch_norm(model)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(mnist5k.train.x[:256], mnist5k.train.y[:256], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("bf16") / "model.keras"
    model.save(path)
    return path


def test_float32_copy_holds_the_same_weights_and_agrees(bfloat16_file, mnist5k):
    mixed = keras.saving.load_model(bfloat16_file, compile=False)
    assert precision.is_mixed(mixed)
    copy = precision.float32_copy(mixed)
    assert not precision.is_mixed(copy)
    for a, b in zip(mixed.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = mnist5k.test.x[:64]
    p_mixed, p_copy = mixed.predict_on_batch(x), copy.predict_on_batch(x)
    np.testing.assert_allclose(p_copy, p_mixed, atol=3e-2)  # bfloat16 keeps 8 mantissa bits
    assert (p_copy.argmax(1) == p_mixed.argmax(1)).mean() >= 0.95
    assert precision.float32_copy(copy) is copy  # float32 already: nothing to do


def test_a_bfloat16_file_loads_in_float32_without_native_bfloat16(bfloat16_file, cpu):
    from digits.models import load_model

    cpu(False)
    assert not precision.is_mixed(load_model(str(bfloat16_file)))
    cpu(True)
    assert precision.is_mixed(load_model(str(bfloat16_file)))


def test_an_ensemble_of_bfloat16_members_loads_as_float32_where_it_must(bfloat16_file, cpu,
                                                                       tmp_path, mnist5k):
    """The main job's file: members nested in an averaging model, each computing in bfloat16."""
    from digits.models import load_model
    from digits.recipes.ensemble import build_ensemble

    members = [keras.saving.load_model(bfloat16_file, compile=False) for _ in range(2)]
    path = tmp_path / "ensemble.keras"
    build_ensemble(members).save(path)
    cpu(False)
    model = load_model(str(path))
    assert not precision.is_mixed(model)
    x = mnist5k.test.x[:32]
    np.testing.assert_allclose(model.predict_on_batch(x), members[0].predict_on_batch(x),
                               atol=3e-2)  # both members are the same model
