"""Tests of the TFDS builders (dibe_jax.datasets) and dataset statistics.

Real data: CrackForest and MTSDD from ``../shared/data`` (or ``$DIBE_JAX_DATA``), built
once per session into a temporary ``data_dir``. Everything else uses small synthetic
folders written here. Nothing is downloaded: every test runs with name resolution
disabled (:func:`no_network`), so a download attempt fails at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from PIL import Image
from scipy.io import savemat
from tensorflow_datasets.core.utils import tqdm_utils

import dibe_jax.datasets as dd
from dibe_jax.datasets import _common, stats

tfds.disable_progress_bar()

SHARED_DATA = Path(
    os.environ.get("DIBE_JAX_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test of this file may reach the network: name resolution fails at once."""

    def refuse(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "crackforest").is_dir() or not (SHARED_DATA / "magnetic_tile").is_dir():
        pytest.skip(
            f"real data not found at {SHARED_DATA} (expected crackforest/ and magnetic_tile/; "
            "set DIBE_JAX_DATA to the folder holding them)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def cfd(shared_data, tfds_dir):
    return dd.prepare("crackforest", data_dir=tfds_dir, manual_dir=shared_data)


@pytest.fixture(scope="session")
def mt_crack(shared_data, tfds_dir):
    return dd.prepare("magnetic_tile/crack", data_dir=tfds_dir, manual_dir=shared_data)


@pytest.fixture(scope="session")
def synthetic(tfds_dir):
    return dd.prepare("synthetic_cracks", data_dir=tfds_dir)


def _scan(source):
    """(count, shapes of images, shapes of masks, mask values, fg, total, file names)."""
    shapes, mshapes, values, names = set(), set(), set(), []
    fg = total = 0
    for i in range(len(source)):
        ex = source[i]
        shapes.add(ex["image"].shape)
        mshapes.add(ex["mask"].shape)
        values |= set(np.unique(ex["mask"]).tolist())
        fg += int(np.count_nonzero(ex["mask"]))
        total += ex["mask"].size
        names.append(ex["file_name"].decode())
    return len(source), shapes, mshapes, values, fg, total, names


# ----------------------------------------------------------------------------- real data


def test_crackforest_counts_shapes_and_ratio(cfd):
    ds = cfd.as_data_source()
    n_train, shapes, mshapes, values, fg, total, names_train = _scan(ds["train"])
    n_val, shapes_v, _, values_v, fg_v, total_v, names_val = _scan(ds["validation"])
    assert (n_train, n_val) == (360, 348)  # DIBE Table 2
    assert shapes | shapes_v == {(160, 160, 3)}
    assert mshapes == {(160, 160, 1)}
    assert values | values_v == {0, 1}
    # Crack = label 2 only: measured 1:60 (train) and 1:62 (validation).
    assert 50 < (total - fg) / fg < 70
    assert 50 < (total_v - fg_v) / fg_v < 72
    # Split by image: 001-060 train, 061-118 validation, 6 tiles each.
    img_train = {int(n[6:9]) for n in names_train}
    img_val = {int(n[6:9]) for n in names_val}
    assert img_train == set(range(1, 61)) and img_val == set(range(61, 119))
    assert len(set(names_train)) == 360


def test_crackforest_tiles_match_source(cfd, shared_data):
    """Tile t of image NNN is rows 160*(t//3).., cols 160*(t%3).. of the 320x480 original."""
    src = cfd.as_data_source()["train"]
    ex = next(src[i] for i in range(len(src)) if src[i]["file_name"] == b"image/007.jpg#t4")
    full = np.asarray(Image.open(shared_data / "crackforest" / "image" / "007.jpg"))
    np.testing.assert_array_equal(ex["image"], full[160:320, 160:320])


def test_magnetic_tile_crack(mt_crack):
    ds = mt_crack.as_data_source()
    n_train, shapes, mshapes, values, fg, total, names = _scan(ds["train"])
    n_val, _, _, values_v, fg_v, total_v, _ = _scan(ds["validation"])
    assert (n_train, n_val) == (35, 22)  # 57 pairs, i % 5 < 3 -> train
    assert {s[-1] for s in shapes} == {1} and len(shapes) > 10  # grayscale, native sizes
    assert {s[:2] for s in shapes} == {s[:2] for s in mshapes}
    assert values | values_v == {0, 1}
    ratio = (total + total_v - fg - fg_v) / (fg + fg_v)
    assert 200 < ratio < 340  # native masks > 127: about 1:269 (measured)
    assert all(n.startswith("MT_Crack/Imgs/exp") for n in names)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_default_ratio_within_20_percent(synthetic):
    cfg = synthetic.builder_config
    for split, count in (("train", cfg.num_train), ("validation", cfg.num_validation)):
        n, shapes, mshapes, values, fg, total, _ = _scan(synthetic.as_data_source()[split])
        assert n == count
        assert shapes == {(cfg.size, cfg.size, 3)} and mshapes == {(cfg.size, cfg.size, 1)}
        assert values == {0, 1}
        assert abs((total - fg) / fg / cfg.ratio - 1) < 0.2


@pytest.mark.parametrize(
    ("size", "ratio", "count"), [(160, 25, 120), (112, 190, 150), (224, 580, 80), (448, 2200, 60)]
)
def test_generate_example_ratio_of_paper_configs(size, ratio, count):
    fg = total = 0
    for i in range(count):
        image, mask = dd.generate_example(np.random.default_rng([7, i]), size, ratio)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        fg += int(mask.sum())
        total += mask.size
    assert abs((total - fg) / fg / ratio - 1) < 0.2


def test_generate_example_deterministic_and_thin():
    a_img, a_mask = dd.generate_example(3, 448, 2200)
    b_img, b_mask = dd.generate_example(3, 448, 2200)
    c_img, _ = dd.generate_example(4, 448, 2200)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    gray, _ = dd.generate_example(3, 64, 100, channels=1)
    assert gray.shape == (64, 64, 1)
    # THC-like ratios give 1-px strokes: the mask has no 2x2 full block.
    masks = [dd.generate_example(i, 448, 2200)[1][..., 0] for i in range(5)]
    for m in masks:
        blocks = m[:-1, :-1] & m[1:, :-1] & m[:-1, 1:] & m[1:, 1:]
        assert blocks.sum() <= 0.05 * max(m.sum(), 1)
    # The crack is darker than its surroundings (low contrast, but there).
    img, m = dd.generate_example(11, 96, 50, empty_fraction=0.0)
    assert img[m[..., 0] == 1].mean() < img[m[..., 0] == 0].mean() - 10


def test_custom_synthetic_config_builds(tmp_path):
    cfg = dd.SyntheticCracksConfig(
        name="tiny", size=32, ratio=40, num_train=6, num_validation=3, channels=1
    )
    b = dd.SyntheticCracks(config=cfg, data_dir=tmp_path)
    b.download_and_prepare()
    ds = b.as_data_source()
    assert (len(ds["train"]), len(ds["validation"])) == (6, 3)
    assert ds["train"][0]["image"].shape == (32, 32, 1)


# ----------------------------------------------------------------------------- tile_image


def test_tile_image_nine_tiles_row_major():
    raw = np.arange(1344 * 1344, dtype=np.int64).reshape(1344, 1344)
    tiles = dd.tile_image(raw)  # Fig. 7: 1344 x 1344 -> 9 x 448 x 448
    assert len(tiles) == 9 and all(t.shape == (448, 448) for t in tiles)
    np.testing.assert_array_equal(tiles[5], raw[448:896, 896:1344])
    np.testing.assert_array_equal(np.block([tiles[0:3], tiles[3:6], tiles[6:9]]), raw)
    assert len(dd.tile_image(np.zeros((320, 480, 3)), 160)) == 6
    with pytest.raises(ValueError, match="cannot be cut"):
        dd.tile_image(np.zeros((1000, 1344)))


# ----------------------------------------------------------------------------- synthetic trees


def _png(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def _write_thc(root: Path, r: int = 112, n_train: int = 3, n_val: int = 2, size: int | None = None):
    """A THC<r> tree; images are ``size x size`` (default ``r x r``, what config thc<r> needs)."""
    size = r if size is None else size
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            name = f"{i}_filp.png" if prefix == "train" else f"img_{i}.png"
            _png(
                root / f"THC{r}" / f"{prefix}_dataset_{r}" / name,
                rng.integers(0, 255, (size, size, 3)),
            )
            label = np.zeros((size, size), np.uint8)
            label[size // 2, 5 : 5 + 2 * (i + 1)] = 255
            _png(root / f"THC{r}" / f"{prefix}_label_{r}" / name, label)


def _write_mtsdd(root: Path, cls: str = "Crack", n: int = 5, size=(40, 60)):
    rng = np.random.default_rng(1)
    d = root / f"MT_{cls}" / "Imgs"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(d / f"exp1_num_{i}.jpg")
        mask = np.zeros(size, np.uint8)
        mask[10:12, 5:30] = 200
        mask[12, 5:30] = 100  # anti-aliased edge, below the threshold
        _png(d / f"exp1_num_{i}.png", mask)


def _write_cfd(root: Path, stems=("001", "002", "061")):
    rng = np.random.default_rng(2)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "groundTruth").mkdir(parents=True, exist_ok=True)
    for s in stems:
        Image.fromarray(rng.integers(0, 255, (320, 480, 3), dtype=np.uint8)).save(
            root / "image" / f"{s}.jpg"
        )
        seg = np.ones((320, 480), np.uint8)
        seg[100, :] = 2
        seg[200, :] = 3
        savemat(root / "groundTruth" / f"{s}.mat", {"groundTruth": {"Segmentation": seg}})


def _build(builder_cls, data_dir, manual_dir, **kwargs):
    b = builder_cls(data_dir=data_dir, **kwargs)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return b


def _nothing_written(data_dir: Path) -> bool:
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    leftovers = [p for p in files if "array_record" in p.name or "incomplete" in str(p)]
    return not leftovers and not any("incomplete" in p.name for p in data_dir.rglob("*"))


def test_thc_builder_on_synthetic_tree(tmp_path):
    _write_thc(tmp_path / "src")
    b = _build(dd.Thc, tmp_path / "out", tmp_path / "src", config="thc112")
    ds = b.as_data_source()
    assert (len(ds["train"]), len(ds["validation"])) == (3, 2)
    ex = ds["validation"][0]
    assert ex["image"].shape == (112, 112, 3) and ex["mask"].shape == (112, 112, 1)
    values = set()
    for i in range(3):
        values |= set(np.unique(ds["train"][i]["mask"]).tolist())
    assert values == {0, 1}  # 0/255 labels -> {0, 1}
    names = sorted(ds["train"][i]["file_name"].decode() for i in range(3))
    assert names[0] == "THC112/train_dataset_112/0_filp.png"


def test_thc_224_config_reads_its_own_folder(tmp_path):
    _write_thc(tmp_path / "src", r=224, n_train=2, n_val=1)
    b = _build(dd.Thc, tmp_path / "out", tmp_path / "src" / "THC224", config="thc224")
    assert len(b.as_data_source()["train"]) == 2


def test_magnetic_tile_all_is_multiclass(tmp_path):
    for cls in ("Blowhole", "Break", "Crack", "Fray", "Uneven", "Free"):
        _write_mtsdd(tmp_path / "src", cls, n=5)
    b = _build(dd.MagneticTile, tmp_path / "out", tmp_path / "src", config="all")
    ds = b.as_data_source()
    values = set()
    for split in ("train", "validation"):
        for i in range(len(ds[split])):
            values |= set(np.unique(ds[split][i]["mask"]).tolist())
    assert values == {0, 1, 2, 3, 4, 5}
    assert (len(ds["train"]), len(ds["validation"])) == (18, 12)  # 3/2 per class


def test_crackforest_label_configs_on_synthetic_tree(tmp_path):
    _write_cfd(tmp_path / "src")
    b2 = _build(dd.Crackforest, tmp_path / "out", tmp_path / "src", config="label2")
    b3 = _build(dd.Crackforest, tmp_path / "out", tmp_path / "src", config="label_ge2")
    s2, s3 = b2.as_data_source(), b3.as_data_source()
    assert (len(s2["train"]), len(s2["validation"])) == (12, 6)
    fg2 = sum(int(s2["train"][i]["mask"].sum()) for i in range(12))
    fg3 = sum(int(s3["train"][i]["mask"].sum()) for i in range(12))
    assert (fg2, fg3) == (2 * 480, 2 * 2 * 480)  # one row of label 2 (+ one of label 3)


# ----------------------------------------------------------------------------- bad input


def _expect_build_error(builder_cls, tmp_path, manual, match, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(dd.DatasetFileError, match=match):
        _build(builder_cls, out, manual, **kwargs)
    assert _nothing_written(out)
    return out


def test_bad_input_truncated_image_then_fixed_rebuild(tmp_path):
    src = tmp_path / "src"
    _write_thc(src)
    bad = src / "THC112" / "train_dataset_112" / "1_filp.png"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    out = _expect_build_error(
        dd.Thc, tmp_path, src, r"1_filp\.png: unreadable or truncated", config="thc112"
    )
    bad.write_bytes(good)  # fix it: a rebuild in the same data_dir succeeds
    b = _build(dd.Thc, out, src, config="thc112")
    assert len(b.as_data_source()["train"]) == 3


def test_bad_input_size_mismatch(tmp_path):
    src = tmp_path / "src"
    _write_mtsdd(src)
    _png(src / "MT_Crack" / "Imgs" / "exp1_num_3.png", np.zeros((40, 59), np.uint8))
    _expect_build_error(
        dd.MagneticTile, tmp_path, src, r"exp1_num_3\.png: mask is 40x59.*is 40x60", config="crack"
    )


def test_bad_input_non_binary_mask(tmp_path):
    src = tmp_path / "src"
    _write_thc(src)
    label = np.zeros((112, 112), np.uint8)
    label[3, 3] = 128
    _png(src / "THC112" / "val_label_112" / "img_1.png", label)
    _expect_build_error(
        dd.Thc, tmp_path, src, r"img_1\.png: mask has non-binary values \[0, 128\]", config="thc112"
    )


def test_bad_input_missing_pair(tmp_path):
    src = tmp_path / "src"
    _write_thc(src)
    (src / "THC112" / "train_label_112" / "2_filp.png").unlink()
    _expect_build_error(dd.Thc, tmp_path, src, r"2_filp\.png \(no label\)", config="thc112")


def test_bad_input_thc_image_of_the_wrong_size(tmp_path):
    """Config thcR guarantees R x R examples (native_image_size): other sizes are named."""
    src = tmp_path / "src"
    _write_thc(src, size=100)
    _expect_build_error(
        dd.Thc,
        tmp_path,
        src,
        r"0_filp\.png: image is 100x100, config thc112 expects 112x112",
        config="thc112",
    )


def test_bad_input_crackforest(tmp_path):
    src = tmp_path / "src"
    _write_cfd(src)
    (src / "groundTruth" / "002.mat").unlink()
    _expect_build_error(dd.Crackforest, tmp_path, src, r"002\.jpg \(no groundTruth/002\.mat\)")
    _write_cfd(src)
    seg = np.full((320, 480), 7, np.uint8)
    savemat(src / "groundTruth" / "061.mat", {"groundTruth": {"Segmentation": seg}})
    _expect_build_error(dd.Crackforest, tmp_path, src, r"061\.mat: Segmentation has values \[7\]")
    (src / "groundTruth" / "061.mat").write_bytes(b"not a mat file")
    _expect_build_error(dd.Crackforest, tmp_path, src, r"061\.mat: unreadable MATLAB file")


def test_missing_manual_dir_says_what_to_put_where(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        dd.DatasetFileError, match=r"(?s)no crackforest files.*groundTruth/001\.mat"
    ):
        _build(dd.Crackforest, tmp_path / "out", tmp_path / "empty")
    _write_mtsdd(tmp_path / "mt", "Blowhole", n=1)
    with pytest.raises(dd.DatasetFileError, match=r"(?s)MT_Crack/Imgs.*folder is missing"):
        _build(dd.MagneticTile, tmp_path / "out", tmp_path / "mt", config="crack")


def test_without_manual_dir_the_public_url_goes_through_the_download_manager(tmp_path, monkeypatch):
    """No network: a stand-in download manager 'extracts' a local CFD tree."""
    monkeypatch.setattr(_common, "check_reachable", lambda url, **kwargs: None)
    extracted = tmp_path / "extracted" / "CrackForest-dataset-0123abc"
    _write_cfd(extracted, stems=("001",))

    class StandInDownloadManager:
        download_dir = tmp_path / "downloads"
        urls: list[str] = []

        def download_and_extract(self, url):
            self.urls.append(url)
            return tmp_path / "extracted"

    builder = dd.Crackforest(data_dir=tmp_path / "out")
    dm = StandInDownloadManager()
    assert builder._source_root(dm) == extracted
    assert dm.urls == ["https://github.com/cuilimeng/CrackForest-dataset/archive/HEAD.zip"]
    # A filled default manual folder (download_dir/manual) is used without downloading.
    _write_cfd(tmp_path / "downloads" / "manual" / "crackforest", stems=("001",))
    assert builder._source_root(dm) == tmp_path / "downloads" / "manual" / "crackforest"
    assert len(dm.urls) == 1


# ----------------------------------------------------------------------------- stats


def test_stats_table_on_crackforest(cfd, shared_data, tfds_dir):
    table = stats.run("crackforest", data_dir=tfds_dir, manual_dir=shared_data)
    assert "| train | 360 |" in table and "| validation | 348 |" in table
    assert "1:25" in table and "360/348" in table  # the paper's Table 2 row
    assert "160x160" in table


def test_stats_on_synthetic_and_main(synthetic, tfds_dir, capsys):
    stats.main(["synthetic_cracks/r150_96", "--data-dir", str(tfds_dir)])
    out = capsys.readouterr().out
    assert "| train | 384 |" in out and "96x96" in out


# ----------------------------------------------------------------------------- catalog

KNOWN = (
    "known: crackforest, magnetic_tile, synthetic_cracks, thc, folder (your own images: "
    "--manual-dir PATH)"
)
CFD_HAS = "crackforest has: label2, label_ge2"


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Checks must neither instantiate a builder nor ask TFDS's registry."""

    def refuse(*args, **kwargs):
        raise AssertionError("a check built or looked up a builder")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "__init__", refuse)
    monkeypatch.setattr(tfds, "builder", refuse)


def test_names_and_config_names(nothing_is_built):
    assert dd.names() == ("crackforest", "magnetic_tile", "synthetic_cracks", "thc")
    assert dd.config_names("crackforest") == ("label2", "label_ge2")
    assert dd.config_names("magnetic_tile") == (
        "blowhole",
        "break",
        "crack",
        "fray",
        "uneven",
        "free",
        "all",
    )
    assert dd.config_names("thc") == ("thc448", "thc224", "thc112")
    assert dd.config_names("synthetic_cracks") == (
        "r150_96",
        "r25_160",
        "r190_112",
        "r580_224",
        "r2200_448",
        "multi_96",
    )
    with pytest.raises(ValueError) as info:
        dd.config_names("cfd")
    assert str(info.value) == f"unknown dataset 'cfd'; {KNOWN}"


def test_names_are_the_tfds_names_of_the_builders():
    for name in dd.names():
        assert dd.builder_class(name).name == name
        assert name in tfds.list_builders(with_community_datasets=False)


def test_check_spec_returns_the_canonical_spec(nothing_is_built):
    assert dd.check_spec("crackforest") == "crackforest/label2"
    assert dd.check_spec("magnetic_tile") == "magnetic_tile/crack"
    assert dd.check_spec("synthetic_cracks") == "synthetic_cracks/r150_96"
    assert dd.check_spec("thc") == "thc/thc448"
    assert dd.check_spec(" thc/thc112 ") == "thc/thc112"
    for name in dd.names():
        for config in dd.config_names(name):
            assert dd.check_spec(f"{name}/{config}") == f"{name}/{config}"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("crackforest/label3", f"dataset 'crackforest/label3': unknown config 'label3'; {CFD_HAS}"),
        ("cityscapes", f"unknown dataset 'cityscapes'; {KNOWN}"),
        ("cityscapes/fine", f"dataset 'cityscapes/fine': unknown dataset 'cityscapes'; {KNOWN}"),
        ("CrackForest", f"unknown dataset 'CrackForest'; {KNOWN}"),
        (
            "crackforest:1.0.0",
            "dataset 'crackforest:1.0.0': a version suffix is not accepted (each dataset has "
            "one version); use 'crackforest/label2'",
        ),
        (
            "crackforest/label2:1.*.*",
            "dataset 'crackforest/label2:1.*.*': a version suffix is not accepted (each dataset "
            "has one version); use 'crackforest/label2'",
        ),
        (
            "cfd:1.0.0",
            "dataset 'cfd:1.0.0': a version suffix is not accepted (each dataset has one "
            f"version); use NAME or NAME/CONFIG; {KNOWN}",
        ),
        (
            "crackforest/label2/1.0.0",
            "dataset 'crackforest/label2/1.0.0': expected NAME or NAME/CONFIG (one '/'); "
            + CFD_HAS,
        ),
        ("crackforest/", f"dataset 'crackforest/': empty config after '/'; {CFD_HAS}"),
        ("/label2", f"dataset '/label2': no dataset name before '/'; {KNOWN}"),
        ("", f"dataset is empty; {KNOWN}"),
        (None, f"dataset must be a string NAME or NAME/CONFIG, got None; {KNOWN}"),
    ],
)
def test_check_spec_says_what_is_wrong_in_one_line(nothing_is_built, spec, message):
    with pytest.raises(ValueError) as info:
        dd.check_spec(spec)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_native_and_default_image_sizes(nothing_is_built):
    expected = {
        "crackforest/label2": (160, 160),
        "crackforest/label_ge2": (160, 160),
        "thc/thc448": (448, 448),
        "thc/thc224": (224, 224),
        "thc/thc112": (112, 112),
        "synthetic_cracks/r150_96": (96, 96),
        "synthetic_cracks/r25_160": (160, 160),
        "synthetic_cracks/r190_112": (112, 112),
        "synthetic_cracks/r580_224": (224, 224),
        "synthetic_cracks/r2200_448": (448, 448),
        "synthetic_cracks/multi_96": (96, 96),
        **{f"magnetic_tile/{c}": None for c in dd.config_names("magnetic_tile")},
    }
    assert len(expected) == sum(len(dd.config_names(n)) for n in dd.names())  # all covered
    for spec, size in expected.items():
        assert dd.native_image_size(spec) == size, spec
        # Fixed-size sets are used as they are; magnetic_tile is resized to 224 x 224.
        assert dd.default_image_size(spec) == (224 if size is None else None), spec
    assert dd.native_image_size("crackforest") == (160, 160)  # default config
    assert dd.default_image_size("magnetic_tile") == 224
    for stride in (16, 32):  # U-Net / DeepLabv3, FCN
        assert dd.default_image_size("magnetic_tile") % stride == 0
    with pytest.raises(ValueError, match="unknown config 'label3'"):
        dd.native_image_size("crackforest/label3")
    with pytest.raises(ValueError, match="unknown dataset 'x'"):
        dd.default_image_size("x")


def test_native_image_size_matches_the_builders_features(tmp_path):
    """The class-level answer agrees with what each builder declares (and TFDS checks
    when it writes an example): a fixed image/mask shape iff a native size."""
    for name in dd.names():
        for config in dd.config_names(name):
            b = dd.builder_class(name)(config=config, data_dir=tmp_path)
            image, mask = b.info.features["image"].shape, b.info.features["mask"].shape
            size = dd.native_image_size(f"{name}/{config}")
            assert dd.native_image_size(b) == size
            if size is None:
                assert image[:2] == (None, None) and mask[:2] == (None, None)
            else:
                assert image[:2] == size and mask[:2] == size
    assert not any(tmp_path.iterdir())  # instantiating wrote nothing


def test_split_names_and_check_split(nothing_is_built):
    for name in dd.names():
        assert dd.split_names(name) == ("train", "validation")
    dd.check_split("crackforest", "train")
    dd.check_split("magnetic_tile/all", "validation")
    with pytest.raises(ValueError) as info:
        dd.check_split("crackforest", "test")
    assert str(info.value) == (
        "split 'test' not in dataset crackforest/label2; it has: train, validation"
    )
    with pytest.raises(ValueError, match="unknown config 'label3'"):
        dd.check_split("crackforest/label3", "train")


def test_split_names_of_prepared_builders_agree(synthetic, cfd):
    for builder in (synthetic, cfd):
        assert dd.split_names(builder) == dd.split_names(builder.name)
        assert set(builder.as_data_source()) == set(dd.split_names(builder))
    with pytest.raises(ValueError, match=r"^split 'test' not in dataset synthetic_cracks/r150_96;"):
        dd.check_split(synthetic, "test")


def test_prepare_and_data_source_check_before_building(tmp_path):
    with pytest.raises(ValueError, match=f"unknown config 'label3'; {CFD_HAS}$"):
        dd.prepare("crackforest/label3", data_dir=tmp_path)
    with pytest.raises(ValueError, match="^split 'test' not in dataset synthetic_cracks/r150_96"):
        dd.data_source("synthetic_cracks", "test", data_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_magnetic_tile_resized_to_the_default_size_has_one_shape(mt_crack):
    """MTSDD images come in many sizes (Crack: 49), so batches need a resize: at
    default_image_size every example (image and mask) has one shape and stacks."""
    from dibe_jax.data import augment

    size = dd.default_image_size("magnetic_tile/crack")
    assert size == 224
    native, resized = set(), []
    for split in dd.split_names(mt_crack):
        source = mt_crack.as_data_source()[split]
        for i in range(len(source)):
            ex = source[i]
            native.add(ex["image"].shape)
            resized.append(augment.resize(ex["image"], ex["mask"], size))
    assert len(native) > 10
    assert {(im.shape, m.shape) for im, m in resized} == {((224, 224, 1), (224, 224, 1))}
    assert np.stack([im for im, _ in resized]).shape == (57, 224, 224, 1)


# ----------------------------------------------------------------------------- prepare


def _no_build_left(data_dir: Path) -> bool:
    return not any("array_record" in p.name or "incomplete" in p.name for p in data_dir.rglob("*"))


def test_offline_download_fails_fast_in_one_line(tmp_path):
    """No manual_dir, nothing prepared, no network (name resolution refused): one line,
    within seconds (TFDS alone retries for about 3.5 minutes), chained to the cause."""
    start = time.perf_counter()
    with pytest.raises(dd.DatasetFileError) as info:
        dd.prepare("magnetic_tile/crack", data_dir=tmp_path)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "dataset magnetic_tile/crack could not be downloaded from "
        "https://github.com/abin24/Magnetic-tile-defect-datasets./archive/HEAD.zip "
        "(OSError: cannot reach github.com:443: "
    )
    assert "pass manual_dir (--manual-dir) with the raw files: MT_<Class>/Imgs/" in message
    assert isinstance(info.value.__cause__, OSError)
    assert _no_build_left(tmp_path)


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ConnectionError("HTTPSConnectionPool(host='github.com'): Max retries"),
        tfds.download.DownloadError("Failed to get url https://x. HTTP code: 404."),
    ],
    ids=["ConnectionError", "DownloadError"],
)
def test_failed_download_is_one_line_chained_from_the_error(tmp_path, monkeypatch, error):
    monkeypatch.setattr(_common, "check_reachable", lambda url, **kwargs: None)
    calls = []

    def fail(self, url):
        calls.append(url)
        raise error

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fail)
    with pytest.raises(dd.DatasetFileError) as info:
        dd.prepare("crackforest", data_dir=tmp_path)
    assert calls == [dd.Crackforest.URL]
    assert info.value.__cause__ is error
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"dataset crackforest/label2 could not be downloaded from {dd.Crackforest.URL} "
        f"({type(error).__name__}: "
    )
    assert message.endswith(
        "pass manual_dir (--manual-dir) with the raw files: image/NNN.jpg and "
        "groundTruth/NNN.mat, NNN = 001-118"
    )
    assert _no_build_left(tmp_path)


def test_needs_download_only_without_local_files(tmp_path):
    b = dd.MagneticTile(config="crack", data_dir=tmp_path / "tfds")
    assert b.needs_download(None)
    assert not b.needs_download(tmp_path / "anywhere")  # manual_dir: never download
    assert not dd.SyntheticCracks(data_dir=tmp_path / "tfds").needs_download(None)
    downloads = tmp_path / "tfds" / "downloads"
    # A download TFDS cached earlier (file + .INFO naming the URL) needs no network.
    (downloads / "github.com_abin24_HEAD.zip").parent.mkdir(parents=True)
    (downloads / "github.com_abin24_HEAD.zip").write_bytes(b"zip")
    (downloads / "github.com_abin24_HEAD.zip.INFO").write_text(
        json.dumps({"urls": [dd.MagneticTile.URL]})
    )
    assert not b.needs_download(None)
    assert dd.Crackforest(data_dir=tmp_path / "tfds").needs_download(None)  # not its URL
    # Raw files in the default manual folder are used without downloading.
    _write_mtsdd(downloads / "manual" / "magnetic_tile", n=1)
    assert b.local_root(None) == downloads / "manual" / "magnetic_tile"


def test_local_builds_print_no_progress_noise(tmp_path, capfd, caplog, monkeypatch):
    """manual_dir and generated sets: no "Downloading and preparing ...", no bars; one
    log record says what was built where; the user's progress-bar setting survives."""
    _write_mtsdd(tmp_path / "src", n=5)
    for cfg in dd.SyntheticCracks.BUILDER_CONFIGS[:1]:  # r150_96, made tiny
        monkeypatch.setattr(cfg, "num_train", 3)
        monkeypatch.setattr(cfg, "num_validation", 2)
    tfds.enable_progress_bar()
    try:
        with caplog.at_level(logging.INFO, logger="dibe_jax.datasets"):
            mt = dd.prepare(
                "magnetic_tile/crack", data_dir=tmp_path / "a", manual_dir=tmp_path / "src"
            )
            syn = dd.prepare("synthetic_cracks", data_dir=tmp_path / "b")
        assert tqdm_utils._active is True  # restored
    finally:
        tfds.disable_progress_bar()
    out, err = capfd.readouterr()
    for noise in ("Downloading", "Dl Completed", "Generating", "Shuffling", "prepared to", "%|"):
        assert noise not in out + err, noise
    assert caplog.messages == [
        f"built dataset magnetic_tile/crack in {mt.data_dir}",
        f"built dataset synthetic_cracks/r150_96 in {syn.data_dir}",
    ]
    assert len(syn.as_data_source()["train"]) == 3 and len(mt.as_data_source()["train"]) == 3


def test_quiet_progress_restores_the_setting_after_an_error():
    for before in (True, False):
        tfds.display_progress_bar(before)
        with pytest.raises(RuntimeError), _common.quiet_progress():
            assert tqdm_utils._active is False
            raise RuntimeError
        assert tqdm_utils._active is before
    tfds.disable_progress_bar()


def test_opencv_notice_is_dropped_and_nothing_else(caplog):
    with caplog.at_level(logging.WARNING):
        absl_logging.warning(
            "OpenCV is not installed. We recommend using OpenCV because it is faster according "
            "to our benchmarks. Defaulting to PIL to decode images..."
        )
        absl_logging.warning("another absl warning")
    assert caplog.messages == ["another absl warning"]


def test_reading_a_dataset_prints_nothing(synthetic, tfds_dir):
    """The symptom of issue 13, end to end in a fresh process: reading examples printed
    TFDS's OpenCV notice (and building printed "Downloading and preparing ...")."""
    code = (
        "import dibe_jax.datasets as dd\n"
        f"b = dd.prepare('synthetic_cracks', data_dir={str(tfds_dir)!r})\n"
        "print(b.as_data_source()['train'][0]['image'].shape)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert run.stdout == "(96, 96, 3)\n"
    assert "OpenCV" not in run.stderr and "Downloading" not in run.stderr, run.stderr
