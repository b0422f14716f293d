"""Image decoding (bit depths, colour modes) and the permissions of written files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image

from dibe_jax.data.images import read_image, to_uint8
from dibe_jax.errors import DatasetFileError
from dibe_jax.files import atomic_write_bytes, atomic_write_json


def _gray8(shape=(17, 23)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_copy_reads_as_its_8_bit_original(tmp_path, suffix):
    gray = _gray8()
    Image.fromarray(gray).save(tmp_path / f"a8{suffix}")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / f"a16{suffix}")
    with Image.open(tmp_path / f"a16{suffix}") as im:
        assert im.mode.startswith("I")  # really stored with 16 bits
    for mode in ("L", "RGB"):
        a8 = read_image(tmp_path / f"a8{suffix}", mode=mode)
        a16 = read_image(tmp_path / f"a16{suffix}", mode=mode)
        assert a16.dtype == np.uint8 and a16.shape == a8.shape
        np.testing.assert_array_equal(a16, a8)
    # not all 255, the old conversion's result
    assert read_image(tmp_path / f"a16{suffix}", mode="L").min() < 255


def test_16_bit_rounding_rule(tmp_path):
    values = np.array([[0, 128, 129, 385, 65535, 1000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "r.png")
    got = read_image(tmp_path / "r.png", mode="L")[..., 0]
    assert got.tolist() == [[0, 0, 1, 1, 255, 4]]  # round(v / 257): 1000 / 257 = 3.89
    np.testing.assert_array_equal(to_uint8(values), got)


def test_colour_modes(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (9, 11, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png", mode="RGB"), rgb)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "p.png", mode="RGB"), np.asarray(pal.convert("RGB"))
    )
    gray = _gray8((9, 11))
    Image.fromarray(np.stack([gray, alpha[..., 0]], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png", mode="L")[..., 0], gray)
    np.testing.assert_array_equal(
        read_image(tmp_path / "la.png", mode="RGB"), np.repeat(gray[..., None], 3, -1)
    )


def test_unsupported_and_broken_files_name_the_file(tmp_path):
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DatasetFileError, match=r"f\.tif: PIL mode 'F'"):
        read_image(tmp_path / "f.tif", mode="L")
    Image.fromarray(_gray8()).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFileError, match=r"t\.png: unreadable or truncated"):
        read_image(tmp_path / "t.png", mode="L")
    with pytest.raises(DatasetFileError, match="file is missing"):
        read_image(tmp_path / "none.png", mode="L")


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        a = atomic_write_json(tmp_path / "run" / "config.json", {"x": 1})
        b = atomic_write_bytes(tmp_path / "run" / "mask.png", b"\x89PNG")
        for p in (a, b):
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == 0o644, oct(mode)  # group and others can read
        os.umask(0o077)
        c = atomic_write_bytes(tmp_path / "run" / "private.bin", b"x")
        assert stat.S_IMODE(c.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert not list((tmp_path / "run").glob(".*.tmp"))
