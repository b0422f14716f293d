"""Your own data: the ``folder`` dataset (dibe_jax.datasets.folder) in the library and the CLI.

Small folders are written in ``tmp_path``: tiny synthetic images for the rules and the
refusals, CrackForest (from ``../shared/data``) as a folder of 480x320 PNGs or of its
160x160 tiles for the real runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dibe_jax.datasets as dd
from dibe_jax import cli
from dibe_jax.datasets import folder, stats
from dibe_jax.errors import DatasetFileError, UserError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DIBE_JAX_DATA", ROOT.parent / "shared" / "data"))
CFD = SHARED_DATA / "crackforest"


def write_pairs(folder_: Path, n: int, *, size=(16, 24), seed=0, gray=False, start=0) -> None:
    """``n`` image/mask pairs (``{0, 255}`` masks with a defect) under ``folder_/images``
    and ``folder_/masks``."""
    rng = np.random.default_rng(seed)
    (folder_ / "images").mkdir(parents=True, exist_ok=True)
    (folder_ / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        shape = size if gray else (*size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            folder_ / "images" / f"im{i:03d}.png"
        )
        mask = np.zeros(size, np.uint8)
        mask[2 : 2 + i % 5 + 1, 3:9] = 255
        Image.fromarray(mask).save(folder_ / "masks" / f"im{i:03d}.png")


def split_folder(tmp_path: Path, **kwargs) -> Path:
    root = tmp_path / "data"
    write_pairs(root / "train", 6, **kwargs)
    write_pairs(root / "val", 3, start=6, **kwargs)
    return root


def cfd_mask(stem: str) -> np.ndarray:
    from scipy.io import loadmat

    seg = loadmat(str(CFD / "groundTruth" / f"{stem}.mat"))["groundTruth"][0, 0]["Segmentation"]
    return (seg == 2).astype(np.uint8)


def write_cfd_folder(root: Path, train: range, val: range, *, tiles: bool = False) -> Path:
    """CrackForest as a folder: whole 480x320 PNGs (masks {0, 255}), or their 160x160 tiles
    named as the builder names them (``NNN_tK``, masks {0, 1})."""
    if not (CFD / "image").is_dir():
        pytest.skip(f"CrackForest not found at {CFD}")
    for split, stems in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in stems:
            stem = f"{i:03d}"
            image = np.asarray(Image.open(CFD / "image" / f"{stem}.jpg").convert("RGB"))
            mask = cfd_mask(stem)
            if not tiles:
                Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
                Image.fromarray(mask * np.uint8(255)).save(root / split / "masks" / f"{stem}.png")
                continue
            pairs = zip(dd.tile_image(image, 160), dd.tile_image(mask, 160), strict=True)
            for t, (a, m) in enumerate(pairs):
                Image.fromarray(a).save(root / split / "images" / f"{stem}_t{t}.png")
                Image.fromarray(m).save(root / split / "masks" / f"{stem}_t{t}.png")
    return root


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


# ------------------------------------------------------------------------------ the dataset


def test_split_layout_is_read_in_place(tmp_path):
    root = split_folder(tmp_path)
    before = tree(tmp_path)
    ds = dd.prepare("folder", manual_dir=root)
    assert isinstance(ds, dd.FolderDataset)
    assert ds.split_names() == ("train", "validation")
    assert ds.class_names() == ("background", "defect") == dd.class_names(ds)
    assert ds.channels == 3 and ds.native_size() == (16, 24)
    assert dd.native_image_size("folder", manual_dir=root) == (16, 24)
    assert dd.default_image_size("folder", manual_dir=root) is None
    train = ds.as_data_source()["train"]
    assert len(train) == 6 and len(ds.source("validation")) == 3
    ex = train[1]
    assert ex["image"].shape == (16, 24, 3) and ex["image"].dtype == np.uint8
    assert ex["mask"].shape == (16, 24, 1) and set(np.unique(ex["mask"])) == {0, 1}
    expected = np.asarray(Image.open(root / "train" / "masks" / "im001.png")) == 255
    np.testing.assert_array_equal(ex["mask"][..., 0], expected)
    assert tree(tmp_path) == before  # nothing written anywhere
    with pytest.raises(UserError, match="split 'test' not in dataset folder"):
        ds.source("test")
    dd.check_split("folder", "validation", manual_dir=root)
    with pytest.raises(ValueError, match="split 'test' not in dataset folder"):
        dd.check_split("folder", "test", manual_dir=root)


def test_flat_layout_gets_a_seeded_validation_split(tmp_path):
    root = tmp_path / "flat"
    write_pairs(root, 10, gray=True)
    a = dd.prepare("folder", manual_dir=root, val_fraction=0.3)
    b = dd.prepare("folder", manual_dir=root, val_fraction=0.3)
    assert a.layout == "flat" and a.val_fraction == 0.3 and a.channels == 1
    va = [p.name for p, _ in a.files("validation")]
    assert len(va) == 3 and va == [p.name for p, _ in b.files("validation")]
    names = {p.name for p, _ in a.files("train")} | set(va)
    assert len(names) == 10  # a partition
    assert len(dd.prepare("folder", manual_dir=root).files("validation")) == 2  # default 0.2
    with pytest.raises(UserError, match=r"data.val_fraction: expected a number in \(0, 1\)"):
        dd.prepare("folder", manual_dir=root, val_fraction=1.0)


def test_sizes_follow_magnetic_tiles_policy(tmp_path):
    root = split_folder(tmp_path)
    write_pairs(root / "val", 1, size=(20, 30), start=9)
    assert dd.native_image_size("folder", manual_dir=root) is None
    assert dd.default_image_size("folder", manual_dir=root) == 224 == folder.DEFAULT_IMAGE_SIZE


def test_classes_json_palette_and_colour_masks(tmp_path):
    root = tmp_path / "mc"
    write_pairs(root / "train", 2)
    write_pairs(root / "val", 1, start=2)
    ids = np.zeros((16, 24), np.uint8)
    ids[1:4, 1:4], ids[8:12, 5:9] = 1, 2
    # palette PNG: its indices are the class ids
    pal = Image.fromarray(ids, "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(root / "train" / "masks" / "im000.png")
    # grayscale class ids
    Image.fromarray(ids).save(root / "train" / "masks" / "im001.png")
    # RGB through the colour map
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    Image.fromarray(colours[ids]).save(root / "val" / "masks" / "im002.png")
    (root / "classes.json").write_text(
        json.dumps({"classes": ["background", "crack", "spot"], "colors": colours.tolist()})
    )
    ds = dd.prepare("folder", manual_dir=root)
    assert ds.class_names() == ("background", "crack", "spot")
    for split, i in (("train", 0), ("train", 1), ("validation", 0)):
        np.testing.assert_array_equal(ds.source(split)[i]["mask"][..., 0], ids)
    # a colour outside the map is refused, naming the file and the colour
    bad = colours[ids].copy()
    bad[0, 0] = (9, 9, 9)
    Image.fromarray(bad).save(root / "val" / "masks" / "im002.png")
    with pytest.raises(DatasetFileError, match=r"im002\.png: mask colours not in .*\(9, 9, 9\)"):
        dd.prepare("folder", manual_dir=root)


def test_anti_aliased_masks_are_thresholded_at_127(tmp_path):
    root = split_folder(tmp_path)
    soft = np.array([[0, 40, 127, 128, 200, 255]], np.uint8).repeat(16, 0).repeat(4, 1)
    Image.fromarray(soft).save(root / "train" / "masks" / "im000.png")
    got = dd.prepare("folder", manual_dir=root).source("train")[0]["mask"][0, :, 0]
    assert got.tolist() == [0] * 12 + [1] * 12


def test_sixteen_bit_images_decode_like_their_8_bit_originals(tmp_path):
    root = split_folder(tmp_path, gray=True)
    ds8 = dd.prepare("folder", manual_dir=root)
    a8 = ds8.source("train")[0]["image"]
    path = root / "train" / "images" / "im000.png"
    Image.fromarray(np.asarray(Image.open(path)).astype(np.uint16) * 257).save(path)
    ds16 = dd.prepare("folder", manual_dir=root)
    assert ds16.fingerprint != ds8.fingerprint and ds16.channels == 1
    np.testing.assert_array_equal(ds16.source("train")[0]["image"], a8)


# ------------------------------------------------------------------------------ never stale


def test_editing_a_mask_changes_data_stats(tmp_path, capsys):
    root = split_folder(tmp_path)
    assert cli.main(["data", "stats", "folder", "--manual-dir", str(root)]) == 0
    first = capsys.readouterr().out
    assert "| train | 6 | 16x24 |" in first and "| validation | 3 |" in first
    mask = root / "train" / "masks" / "im000.png"
    Image.fromarray(np.full((16, 24), 255, np.uint8)).save(mask)  # all defect now
    assert cli.main(["data", "stats", "folder", "--manual-dir", str(root)]) == 0
    second = capsys.readouterr().out
    assert second != first
    assert "100.0 %" not in second and "| all | 9 |" in second
    # a file added is seen too
    write_pairs(root / "train", 1, start=20)
    assert cli.main(["data", "stats", "folder", "--manual-dir", str(root)]) == 0
    assert "| train | 7 |" in capsys.readouterr().out


def test_stats_of_a_crackforest_folder_match_the_native_ratio(tmp_path):
    root = write_cfd_folder(tmp_path / "cfd", range(1, 4), range(61, 63))
    table = stats.run("folder", manual_dir=str(root))
    assert "| train | 3 | 320x480 |" in table and "| validation | 2 | 320x480 |" in table
    expected = sum(cfd_mask(f"{i:03d}").sum() for i in (1, 2, 3))
    ds = dd.prepare("folder", manual_dir=root)
    assert int(ds.class_pixels("train")[:, 1].sum()) == int(expected)


# ------------------------------------------------------------------------------ refusals


def _unpaired_image(root: Path) -> str:
    (root / "train" / "masks" / "im002.png").unlink()
    return r"train/images/im002\.png: no mask im002\.\* in"


def _unpaired_masks(root: Path) -> str:
    for i in (2, 4):
        (root / "train" / "images" / f"im00{i}.png").unlink()
    return r"train/masks/im002\.png: no image im002\.\* in .* \(and 1 more: im004\.png\)"


def _size_mismatch(root: Path) -> str:
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "val" / "masks" / "im007.png")
    return r"val/masks/im007\.png: mask is 10x10 \(rows x cols\) but image im007\.png is 16x24"


def _truncated(root: Path) -> str:
    p = root / "train" / "images" / "im003.png"
    p.write_bytes(p.read_bytes()[:60])
    return r"train/images/im003\.png: unreadable or truncated image"


def _empty_split(root: Path) -> str:
    for p in (root / "val" / "images").iterdir():
        p.unlink()
    for p in (root / "val" / "masks").iterdir():
        p.unlink()
    return r"val/images: no image files"


def _class_ids_without_classes(root: Path) -> str:
    Image.fromarray(np.eye(16, 24, dtype=np.uint8) * 2).save(root / "train" / "masks" / "im001.png")
    return r"train/masks/im001\.png: mask values \{0, 2\} are neither \{0, 1\}"


def _outside_classes(root: Path) -> str:
    (root / "classes.json").write_text('["background", "crack", "spot"]')
    Image.fromarray(np.eye(16, 24, dtype=np.uint8) * 7).save(root / "val" / "masks" / "im008.png")
    return r"val/masks/im008\.png: mask values \{0, 255\} outside the 3 class ids 0..2"


def _jpeg_mask(root: Path) -> str:
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(root / "train" / "masks" / "x.jpg")
    return r"train/masks/x\.jpg: JPEG masks are lossy"


def _wrong_layout(root: Path) -> str:
    (root / "val").rename(root / "valid")
    return r"data/val: folder is missing; expected PATH/train/\{images,masks\}/"


@pytest.mark.parametrize(
    "spoil",
    [
        _unpaired_image,
        _unpaired_masks,
        _size_mismatch,
        _truncated,
        _empty_split,
        _class_ids_without_classes,
        _outside_classes,
        _jpeg_mask,
        _wrong_layout,
    ],
)
def test_a_bad_folder_exits_2_in_one_line_naming_the_file(tmp_path, capsys, spoil):
    root = split_folder(tmp_path)
    expected = spoil(root)
    if spoil is _outside_classes:  # every other mask {0, 255}: the first two name them
        expected = r"masks/im00\d\.png: mask values \{0, 255\} outside the 3 class ids 0\.\.2"
    before = tree(tmp_path)
    for argv in (
        ["data", "stats", "folder", "--manual-dir", str(root)],
        ["train", "--dataset", "folder", "--manual-dir", str(root), "--workdir",
         str(tmp_path / "run"), "--set", "model.width=4", "--epochs", "1", "--batch-size", "2"],
    ):  # fmt: skip
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert err.startswith("dibe-jax: error: "), err
        import re

        assert re.search(expected, err), err
    assert tree(tmp_path) == before  # nothing written: no run folder, nothing in the data


def test_wrong_names_say_what_to_do(tmp_path, capsys):
    root = split_folder(tmp_path)
    assert cli.main(["data", "stats", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"use --dataset folder --manual-dir {root}" in err
    with pytest.raises(ValueError, match="folder takes no config"):
        dd.check_spec("folder/x")
    assert dd.check_spec("folder") == "folder"
    with pytest.raises(UserError, match="data.manual_dir: dataset 'folder' reads your own"):
        dd.class_names("folder")
    (root / "val").rename(tmp_path / "elsewhere")
    (root / "train").rename(tmp_path / "elsewhere2")
    assert cli.main(["data", "stats", "folder", "--manual-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith("not a dataset folder; expected " + folder.LAYOUT)
    assert err[1] == "hint: it holds nothing"


# ------------------------------------------------------------------------------ runs

TINY = ["--set", "model.width=4", "--set", "model.num_stages=1", "--no-progress"]


@pytest.mark.slow  # 236 files of 480x320 written and read, three compilations
def test_crackforest_as_a_folder_trains_and_reopens_from_another_directory(
    tmp_path, monkeypatch, capsys
):
    """CFD written as a folder of 480x320 PNGs (001-060 train, 061-118 val), given as a
    relative --manual-dir: config.json stores it absolute, so eval and predict work from
    another directory and write nothing there."""
    work = tmp_path / "work"
    write_cfd_folder(work / "cfd", range(1, 61), range(61, 119))
    monkeypatch.chdir(work)
    argv = ["train", "--dataset", "folder", "--manual-dir", "cfd", "--workdir", "run"]
    argv += ["--epochs", "1", "--batch-size", "30", "--image-size", "32", *TINY]
    assert cli.main(argv) == 0
    capsys.readouterr()
    config = json.loads((work / "run" / "config.json").read_text())
    assert config["data"]["dataset"] == "folder"
    assert config["data"]["manual_dir"] == str(work / "cfd")
    info = json.loads((work / "run" / "model.json").read_text())
    assert info["native_size"] == [320, 480] and info["in_channels"] == 3

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["eval", "--workdir", str(work / "run")]) == 0
    out = capsys.readouterr().out
    record = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert f"{record[-1]['iou']:.4f}" in out  # the same numbers as the training's evaluation
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing built here
    images = work / "cfd" / "val" / "images"
    assert cli.main(["predict", "--workdir", str(work / "run"), "--input", str(images / "061.png"),
                     "--out", "preds", "--no-progress"]) == 0  # fmt: skip
    mask = np.asarray(Image.open(elsewhere / "preds" / "061_mask.png"))
    assert mask.shape == (320, 480)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["preds"]


@pytest.mark.slow  # the crackforest build and two evaluations of its 348 tiles
def test_a_folder_of_the_builders_tiles_evaluates_identically(tmp_path, capsys):
    """The CFD tiles written as a folder give the eval numbers of the crackforest builder for
    the same checkpoint (trained on the folder's training tiles of 001-002)."""
    from dibe_jax import train

    root = write_cfd_folder(tmp_path / "tiles", range(1, 3), range(61, 119), tiles=True)
    config = train.override(
        train.Config(),
        {
            "data.dataset": "folder",
            "data.manual_dir": str(root),
            "epochs": 1,
            "batch_size": 6,
            "model.width": 4,
            "model.num_stages": 1,
            "progress": False,
        },
    )
    own = train.train_and_evaluate(config, tmp_path / "run")  # its one checkpoint's scores
    builder = train.evaluate_checkpoint(
        tmp_path / "run",
        dataset="crackforest",
        data_dir=tmp_path / "tfds",
        manual_dir=SHARED_DATA,
    )
    for key in ("tp", "fp", "fn", "tn"):
        assert own[key] == builder[key], key
    assert own["tp"] + own["fp"] + own["fn"] + own["tn"] == 348 * 160 * 160
    assert own["iou"] == builder["iou"] and own["oii"] == builder["oii"]
    # through the command line, with the classes checked: a multi-class set is refused
    argv = ["eval", "--workdir", str(tmp_path / "run"), "--dataset", "synthetic_cracks/multi_96",
            "--data-dir", str(tmp_path / "tfds")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "its classes (background, crack, spot) differ from those of the run" in err


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_folder_over_the_memory_budget_streams_through_grain(tmp_path, caplog):
    from dibe_jax import train

    root = split_folder(tmp_path, gray=True)
    config = train.override(
        train.Config(),
        {
            "data.dataset": "folder",
            "data.manual_dir": str(root),
            "data.memory_budget_mb": 0,
            "epochs": 1,
            "batch_size": 2,
            "model.width": 4,
            "model.num_stages": 1,
            "progress": False,
        },
    )
    with caplog.at_level("INFO", logger="dibe_jax"):
        record = train.train_and_evaluate(config, tmp_path / "run")
    assert "the train split" in caplog.text and "grain loader" in caplog.text
    assert record["tp"] + record["fp"] + record["fn"] + record["tn"] == 3 * 16 * 24
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["in_channels"] == 1 and info["native_size"] == [16, 24]
