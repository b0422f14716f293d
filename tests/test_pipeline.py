"""Tests of the input pipeline (dibe_jax.data): determinism, augmentation, resizing,
progressive schedules, resumable state, sharding, worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

import dibe_jax.datasets as dd
from dibe_jax.data import (
    ArraySource,
    AugmentConfig,
    Preprocess,
    make_loader,
    pad_batch,
    size_at,
)
from dibe_jax.data import augment as aug

tfds.disable_progress_bar()

NO_COLOR = AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0)


def _synthetic(n: int = 24, size: int = 48, ratio: float = 40.0) -> ArraySource:
    rows = []
    for i in range(n):
        image, mask = dd.generate_example(np.random.default_rng([5, i]), size, ratio)
        rows.append({"image": image, "mask": mask, "file_name": f"ex{i:03d}".encode()})
    return ArraySource(rows, name=f"synthetic{n}")


def _blocks(n: int = 12, size: int = 40) -> ArraySource:
    """Images whose mask is derivable from the image: mask = (red channel > 127).

    Random 4x4-pixel blocks, so a window, a flip or an exact 2x downscale keeps the
    relation pixel for pixel.
    """
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(n):
        on = rng.random((size // 4, size // 4)) < 0.3
        on = np.kron(on, np.ones((4, 4), bool))
        image = rng.integers(0, 100, (size, size, 3)).astype(np.uint8)
        image[on, 0] = 200
        images.append(image)
        masks.append(on[..., None].astype(np.uint8))
    return ArraySource({"image": np.stack(images), "mask": np.stack(masks)}, name="blocks")


def _all(loader) -> list[dict]:
    return list(loader)


# ----------------------------------------------------------------------------- basics


def test_batch_shapes_dtypes_and_count():
    src = _synthetic(n=22)
    batches = _all(make_loader(src, batch_size=8, image_size=32, train=True, seed=1))
    assert len(batches) == 2  # 22 // 8, remainder dropped in training
    b = batches[0]
    assert b["image"].shape == (8, 32, 32, 3) and b["image"].dtype == np.float32
    assert b["mask"].shape == (8, 32, 32, 1) and b["mask"].dtype == np.uint8
    assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
    assert set(np.unique(b["mask"]).tolist()) <= {0, 1}

    evals = _all(make_loader(src, batch_size=8, image_size=32, train=False, keep_file_name=True))
    assert [len(e["image"]) for e in evals] == [8, 8, 6]  # remainder kept in evaluation
    names = [n for e in evals for n in e["file_name"]]
    assert names == [f"ex{i:03d}" for i in range(22)]  # file order, every example once


def test_deterministic_for_seed_and_different_across_epochs():
    src = _synthetic()

    def run(seed, epoch):
        return _all(
            make_loader(src, batch_size=6, image_size=40, train=True, seed=seed, epoch=epoch)
        )

    a, b = run(0, 0), run(0, 0)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["mask"], y["mask"])
    c = run(0, 1)
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    assert not np.array_equal(run(1, 0)[0]["image"], a[0]["image"])


def test_epoch_order_is_a_permutation_that_changes():
    src = _synthetic(n=20)

    def order(epoch):
        batches = make_loader(
            src, batch_size=5, image_size=None, train=True, epoch=epoch, keep_file_name=True
        )
        return [n for b in batches for n in b["file_name"]]

    o0, o1 = order(0), order(1)
    assert sorted(o0) == sorted(o1) == [f"ex{i:03d}" for i in range(20)]
    assert o0 != o1


def test_eval_is_deterministic_plain_resize():
    src = _synthetic(n=4, size=48)
    (b,) = _all(make_loader(src, batch_size=4, image_size=24, train=False, seed=3, epoch=7))
    image, mask = aug.resize(src[2]["image"], src[2]["mask"], 24)
    np.testing.assert_allclose(b["image"][2], aug.to_float(image))
    np.testing.assert_array_equal(b["mask"][2], mask)


# ----------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("crop", ["crop", "resize"])
def test_augmentation_keeps_mask_binary_and_aligned(crop):
    src = _blocks()
    size = 32 if crop == "crop" else 20  # crop: random 32-px windows; resize: exact 2x down
    batches = make_loader(
        src, batch_size=4, image_size=size, train=True, augment=NO_COLOR, crop=crop, seed=2
    )
    flipped = False
    for b in batches:
        assert set(np.unique(b["mask"]).tolist()) <= {0, 1}
        derived = (b["image"][..., 0] > 0.5).astype(np.uint8)
        agree = np.mean(derived == b["mask"][..., 0])
        assert agree == 1.0 if crop == "crop" else agree > 0.97
        flipped = True
    assert flipped


def test_scale_crop_and_color_jitter_keep_masks_valid():
    src = _blocks()
    cfg = AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.4, scale=(0.3, 1.0))
    for b in make_loader(src, batch_size=4, image_size=24, train=True, augment=cfg, crop="scale"):
        assert set(np.unique(b["mask"]).tolist()) <= {0, 1}
        assert b["image"].min() >= 0.0 and b["image"].max() <= 1.0
        # The defect blocks stay the reddest pixels after jitter (alignment, loosely).
        red = b["image"][..., 0] - b["image"][..., 1:].mean(-1)
        m = b["mask"][..., 0] == 1
        if m.any() and (~m).any():
            assert red[m].mean() > red[~m].mean()


def test_flip_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    image = np.arange(4 * 5 * 1, dtype=np.uint8).reshape(4, 5, 1)
    mask = (image > 10).astype(np.uint8)
    for _ in range(8):
        i, m = aug.random_flip(rng, image, mask)
        np.testing.assert_array_equal(m, (i > 10).astype(np.uint8))


def test_mask_resize_never_invents_values():
    mask = np.zeros((64, 64, 1), np.uint8)
    mask[10, :, 0] = 3  # a 1-px line of class 3
    mask[30:40, 30:40, 0] = 5
    near = aug.resize_mask(mask, 17)
    mx = aug.resize_mask(mask, 16, method="max")
    assert set(np.unique(near).tolist()) <= {0, 3, 5}
    assert set(np.unique(mx).tolist()) == {0, 3, 5}  # "max" keeps the thin line
    assert (mx == 3).sum() == 16
    up = aug.resize_mask(mask, 100)
    assert set(np.unique(up).tolist()) == {0, 3, 5}


def test_channels_and_normalization():
    src = _synthetic(n=4)
    (b,) = _all(
        make_loader(src, batch_size=4, image_size=16, train=False, channels=1, mean=0.5, std=0.25)
    )
    assert b["image"].shape == (4, 16, 16, 1)
    assert b["image"].min() >= -2.0 and b["image"].max() <= 2.0
    gray = np.zeros((8, 8, 1), np.uint8)
    assert aug.convert_channels(gray, 3).shape == (8, 8, 3)


def test_bad_examples_are_reported():
    with pytest.raises(ValueError, match="uint8"):
        Preprocess(size=8)({"image": np.zeros((8, 8, 3)), "mask": np.zeros((8, 8), np.uint8)}, None)
    with pytest.raises(ValueError, match="differ in size"):
        Preprocess(size=8)(
            {"image": np.zeros((8, 8, 3), np.uint8), "mask": np.zeros((8, 9), np.uint8)}, None
        )


# ----------------------------------------------------------------------------- schedules, state


def test_progressive_resizing_one_size_per_epoch():
    schedule = [(0, 16), (2, 24), (3, 32)]
    assert [size_at(schedule, e) for e in range(5)] == [16, 16, 24, 32, 32]
    shapes: dict[int, set] = {}
    for epoch in range(4):  # one loader per epoch, as the training loop makes them
        for b in make_loader(
            _synthetic(n=12), batch_size=4, image_size=schedule, train=True, epoch=epoch
        ):
            shapes.setdefault(epoch, set()).add(b["image"].shape[1:3])
    assert shapes == {0: {(16, 16)}, 1: {(16, 16)}, 2: {(24, 24)}, 3: {(32, 32)}}
    with pytest.raises(ValueError, match="start at epoch 0"):
        size_at([(1, 16)], 0)


def test_iterator_state_resumes_the_same_batches():
    src = _synthetic()
    kwargs = dict(batch_size=4, image_size=32, train=True, seed=9, epoch=2)
    it = iter(make_loader(src, **kwargs))
    next(it), next(it)
    state = it.get_state()
    rest = list(it)
    it2 = iter(make_loader(src, **kwargs))
    it2.set_state(state)
    rest2 = list(it2)
    assert len(rest) == len(rest2) == 4
    for x, y in zip(rest, rest2, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_shards_are_disjoint_and_cover_the_data():
    src = _synthetic(n=20)
    names = []
    for shard in range(2):
        loader = make_loader(
            src,
            batch_size=5,
            image_size=None,
            train=True,
            shard_index=shard,
            shard_count=2,
            keep_file_name=True,
        )
        names.append([n for b in loader for n in b["file_name"]])
    assert len(names[0]) == len(names[1]) == 10
    assert sorted(names[0] + names[1]) == [f"ex{i:03d}" for i in range(20)]


def test_evaluation_shards_keep_every_example():
    src = _synthetic(n=21)
    names = []
    for shard in range(2):
        loader = make_loader(
            src,
            batch_size=4,
            image_size=None,
            train=False,
            shard_index=shard,
            shard_count=2,
            keep_file_name=True,
        )
        names.append([n for b in loader for n in b["file_name"]])
    assert (len(names[0]), len(names[1])) == (11, 10)  # differ by one: pad_batch evens them
    assert sorted(names[0] + names[1]) == [f"ex{i:03d}" for i in range(21)]


def test_pad_batch():
    b = pad_batch({"image": np.ones((3, 2, 2, 1), np.float32), "mask": np.ones((3, 2, 2, 1))}, 5)
    assert b["image"].shape == (5, 2, 2, 1) and b["valid"].tolist() == [1, 1, 1, 0, 0]
    assert b["image"][3:].sum() == 0


# ----------------------------------------------------------------------------- TFDS + workers


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    cfg = dd.SyntheticCracksConfig(name="tiny", size=40, ratio=60, num_train=16, num_validation=6)
    builder = dd.SyntheticCracks(config=cfg, data_dir=tmp_path_factory.mktemp("tfds"))
    builder.download_and_prepare()
    return builder.as_data_source()


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_loader_over_tfds_source_with_workers(tiny_tfds):
    """Each worker batches its own records, so batches depend on ``worker_count``; the
    per-example output (order-free: keyed by file name) does not."""
    src = tiny_tfds["train"]
    kwargs = dict(batch_size=4, image_size=32, train=True, seed=5, epoch=1, keep_file_name=True)

    def by_name(batches):
        return {
            n: (np.array(b["image"][i]), np.array(b["mask"][i]))
            for b in batches
            for i, n in enumerate(b["file_name"])
        }

    local = by_name(make_loader(src, worker_count=0, **kwargs))
    remote = by_name(make_loader(src, worker_count=2, **kwargs))
    assert sorted(local) == sorted(remote) and len(local) == 16
    for name, (image, mask) in local.items():
        np.testing.assert_array_equal(image, remote[name][0])
        np.testing.assert_array_equal(mask, remote[name][1])
    val = _all(make_loader(tiny_tfds["validation"], batch_size=4, image_size=None, train=False))
    assert [len(b["mask"]) for b in val] == [4, 2]
