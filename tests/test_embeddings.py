"""digits.callbacks.embeddings: the sprite, metadata and tensor files of TensorBoard's Projector."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format
from tensorboard.plugins import projector

from digits.callbacks.embeddings import metadata_tsv, sprite, tensor_bytes, write_projector


def test_the_sprite_is_a_square_sheet_of_the_digits_dark_on_white(mnist5k):
    images = mnist5k.test.x[:10]
    sheet = sprite(images)
    assert sheet.shape == (4 * 28, 4 * 28) and sheet.dtype == np.uint8
    assert np.array_equal(sheet[28:56, 0:28], 255 - np.rint(images[4, ..., 0] * 255))
    assert (sheet[84:, 56:] == 255).all()  # the cells after the last image stay white


def test_metadata_has_a_header_and_one_row_per_image():
    text = metadata_tsv([0, 1], np.array([[0.9, 0.1], [0.7, 0.3]]), ("cat", "dog"))
    assert text.splitlines() == ["digit\tpredicted\tcorrect\tconfidence",
                                 "cat\tcat\tyes\t0.900", "dog\tcat\tno\t0.700"]


def test_a_tensor_that_would_pass_for_text_is_written_as_text():
    assert tensor_bytes(np.array([[1.5, -2.25]], np.float32)) == np.array(
        [[1.5, -2.25]], "<f4").tobytes()  # not UTF-8: binary
    zeros = np.zeros((2, 3), np.float32)  # all NUL bytes: valid UTF-8, so text
    assert tensor_bytes(zeros) == b"0\t0\t0\n0\t0\t0\n"


def test_a_second_embedding_joins_the_config_instead_of_replacing_it(tmp_path, mnist5k):
    x, y = mnist5k.test.x[:20], mnist5k.test.y[:20]
    p = np.eye(10, dtype=np.float32)[y]
    for name in ("test", "validation_epoch_1"):
        assert write_projector(tmp_path, name, np.full((20, 8), 1.5), x, y, p,
                               [str(i) for i in range(10)], limit=16) == 16
    config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(),
                               projector.ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == ["test", "validation_epoch_1"]
    assert list(config.embeddings[0].tensor_shape) == [16, 8]
    tensor = np.fromfile(tmp_path / config.embeddings[0].tensor_path, "<f4")
    assert tensor.shape == (16 * 8,) and (tensor == 1.5).all()
