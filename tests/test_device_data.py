"""The in-memory data path and the device augmentation (dibe_jax.data.in_memory,
dibe_jax.data.device_augment) and how the training loop uses them (data.pipeline)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dibe_jax import train
from dibe_jax.data import ArraySource, AugmentConfig, make_loader, pad_batch
from dibe_jax.data import augment as aug
from dibe_jax.data import device_augment as dev
from dibe_jax.data.in_memory import ArraySplit, Batches, decode_split, split_bytes, stored_size

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, tiny_config  # noqa: E402

NO_AUGMENT = AugmentConfig(hflip=0.0, vflip=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
FLIPS_ONLY = AugmentConfig(hflip=0.5, vflip=0.5, brightness=0.0, contrast=0.0, saturation=0.0)


def _one_pixel_batch(n: int, size: tuple[int, int], seed: int = 0):
    """Images that are dark except one bright pixel per example, and a mask with a 1 (or a
    class id 2) at that pixel only; also the pixel positions ``[n, 2]``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 50, (n, *size, 3)).astype(np.uint8)
    masks = np.zeros((n, *size, 1), np.uint8)
    where = np.stack([rng.integers(0, size[0], n), rng.integers(0, size[1], n)], axis=1)
    for i, (r, c) in enumerate(where):
        images[i, r, c] = 255
        masks[i, r, c, 0] = 1 + i % 2  # class ids 1 and 2
    return images, masks, where


def _blocks(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4x4-pixel blocks of classes 0, 1, 2; the red channel says the class (0, 120, 240)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 3, (n, size // 4, size // 4))
    ids = np.kron(ids, np.ones((1, 4, 4), np.int64)).astype(np.uint8)
    images = rng.integers(0, 40, (n, size, size, 3)).astype(np.uint8)
    images[..., 0] = ids * np.uint8(120)
    return images, ids[..., None]


def _argmax_2d(a: np.ndarray) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(np.argmax(a), a.shape))


# ----------------------------------------------------------------------- device augmentation


def test_flips_move_a_one_pixel_mask_with_its_image():
    images, masks, where = _one_pixel_batch(16, (7, 9))
    prep = dev.DevicePreprocess(augment=FLIPS_ONLY, seed=3)
    x, m = jax.jit(prep.train)(5, jnp.asarray(images), jnp.asarray(masks), None)
    x, m = np.asarray(x), np.asarray(m)
    assert x.dtype == np.float32 and m.dtype == np.uint8 and x.shape == (16, 7, 9, 3)
    moved = set()
    for i, (r, c) in enumerate(where):
        pixel = _argmax_2d(x[i, ..., 0])
        assert pixel == _argmax_2d(m[i, ..., 0])  # the mask moved with the image
        assert pixel in {(r, c), (r, 8 - c), (6 - r, c), (6 - r, 8 - c)}
        assert sorted(np.unique(m[i]).tolist()) == [0, 1 + i % 2]  # its class id, nothing new
        moved.add((pixel[0] != r, pixel[1] != c))
    assert len(moved) == 4  # every flip combination happened in 16 examples
    # Always-flip: the pixel must be exactly where the flip puts it.
    always = dev.DevicePreprocess(augment=AugmentConfig(hflip=1.0, vflip=0.0, brightness=0.0))
    _, m = always.train(0, jnp.asarray(images), jnp.asarray(masks), None)
    for i, (r, c) in enumerate(where):
        assert _argmax_2d(np.asarray(m)[i, ..., 0]) == (r, 8 - c)


def test_random_crop_keeps_the_pixel_aligned():
    images, masks, where = _one_pixel_batch(32, (12, 12), seed=1)
    x, m = dev.random_crop(jax.random.key(0), jnp.asarray(images), jnp.asarray(masks), (8, 8))
    x, m = np.asarray(x), np.asarray(m)
    assert x.shape == (32, 8, 8, 3) and m.shape == (32, 8, 8, 1)
    inside = 0
    for i in range(32):
        bright = x[i, ..., 0] == 255
        np.testing.assert_array_equal(bright, m[i, ..., 0] > 0)  # in the window, or in neither
        inside += int(bright.any())
    assert 0 < inside < 32
    x, m = dev.center_crop(jnp.asarray(images), jnp.asarray(masks), (8, 8))
    np.testing.assert_array_equal(np.asarray(x), images[:, 2:10, 2:10])
    with pytest.raises(ValueError, match="cannot crop 16x16"):
        dev.random_crop(jax.random.key(0), jnp.asarray(images), jnp.asarray(masks), (16, 16))


@pytest.mark.parametrize("size", [(20, 20), (40, 40), (24, 30), (56, 72)])
def test_resize_keeps_class_ids_and_alignment(size):
    images, masks = _blocks(6, 40)
    prep = dev.DevicePreprocess(augment=FLIPS_ONLY, seed=1)
    x, m = prep.train(2, jnp.asarray(images), jnp.asarray(masks), size)
    x, m = np.asarray(x), np.asarray(m)
    assert x.shape == (6, *size, 3) and m.shape == (6, *size, 1)
    assert set(np.unique(m).tolist()) <= {0, 1, 2} and len(np.unique(m)) == 3
    derived = np.rint(x[..., 0] * 255 / 120)  # the class the red channel says
    agree = np.mean(derived == m[..., 0])
    # exact 2x down or the stored size: every pixel; otherwise all but block edges
    assert agree == 1.0 if size in ((20, 20), (40, 40)) else agree > 0.9
    # Evaluation: the same geometry, no randomness.
    e1, em = prep.evaluate(jnp.asarray(images), jnp.asarray(masks), size)
    e2, _ = prep.evaluate(jnp.asarray(images), jnp.asarray(masks), size)
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
    assert set(np.unique(np.asarray(em)).tolist()) <= {0, 1, 2}


def test_color_jitter_matches_the_host_formula():
    rng = np.random.default_rng(0)
    images = rng.random((3, 5, 6, 3), dtype=np.float32)
    factors = [(1.1, 0.85, 1.15), (0.9, 1.2, 0.8), (1.0, 1.0, 1.0)]
    b, c, s = (jnp.asarray(v, jnp.float32) for v in zip(*factors, strict=True))
    out = np.asarray(dev.apply_color_jitter(jnp.asarray(images), b, c, s))

    class Fixed:  # a generator whose uniform() returns the given factors in order
        def __init__(self, values):
            self.values = list(values)

        def uniform(self, lo, hi):
            return self.values.pop(0)

    for i, f in enumerate(factors):
        host = aug.color_jitter(Fixed(f), images[i], brightness=0.2, contrast=0.2, saturation=0.2)
        np.testing.assert_allclose(out[i], host, rtol=1e-5, atol=1e-6)
    gray = images[..., :1]
    out1 = dev.apply_color_jitter(jnp.asarray(gray), b, c, None)
    host1 = aug.color_jitter(Fixed(factors[0][:2]), gray[0], saturation=0.0)
    np.testing.assert_allclose(np.asarray(out1)[0], host1, rtol=1e-5, atol=1e-6)


def test_jitter_factors_and_step_keys():
    b, c, s = dev.jitter_factors(jax.random.key(0), 4096, brightness=0.2, contrast=0.0)
    b = np.asarray(b)
    assert 0.8 <= b.min() < 0.81 and 1.19 < b.max() <= 1.2  # U(1 - s, 1 + s)
    assert np.all(np.asarray(c) == 1.0) and np.all(np.asarray(s) != 1.0)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), np.uint8))
    masks = jnp.zeros((4, 8, 8, 1), jnp.uint8)
    prep = dev.DevicePreprocess(augment=AugmentConfig(), seed=0)
    a0, _ = prep.train(7, images, masks, None)
    a1, _ = prep.train(7, images, masks, None)
    a2, _ = prep.train(8, images, masks, None)
    np.testing.assert_array_equal(np.asarray(a0), np.asarray(a1))  # a step draws one augmentation
    assert not np.array_equal(np.asarray(a0), np.asarray(a2))
    assert float(jnp.min(a0)) >= 0.0 and float(jnp.max(a0)) <= 1.0
    plain = dev.DevicePreprocess(mean=0.5, std=0.25).evaluate(images, masks, None)[0]
    np.testing.assert_allclose(
        np.asarray(plain), (aug.to_float(np.asarray(images)) - 0.5) / 0.25, rtol=1e-6
    )


# --------------------------------------------------------------------------- in-memory store


def _examples(n: int, size: int = 32) -> list[dict]:
    return make_examples(n, 4, size=size)


def _key(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("stored", [32, 24])
def test_device_path_gives_the_grain_examples(stored):
    """Augmentation off: each epoch the same multiset of examples as the grain loader (in
    another order: a numpy permutation instead of grain's), with identical pixels, also when
    decoding resized them (32 -> 24); evaluation: the same batches in the same order."""
    data = _examples(24)
    split = decode_split(data, size=(stored, stored), name="train")
    prep = dev.DevicePreprocess()
    for epoch in range(2):
        grain = make_loader(
            data, batch_size=8, image_size=stored, train=True, epoch=epoch, augment=NO_AUGMENT
        )
        grain_x = sorted(_key(x) for b in grain for x in b["image"])
        device = Batches(
            split, batch_size=8, train=True, epoch=epoch, process_index=0, process_count=1
        )
        device_x = []
        for i, b in enumerate(device):
            x, _ = prep.train(i, jnp.asarray(b["image"]), jnp.asarray(b["mask"]), None)
            device_x += [_key(v) for v in np.asarray(x)]
        assert sorted(device_x) == grain_x
    evals = list(make_loader(data[:10], batch_size=4, image_size=stored, train=False))
    device = Batches(
        decode_split(data[:10], size=(stored, stored)),
        batch_size=4,
        train=False,
        process_index=0,
        process_count=1,
    )
    for g, d in zip(evals, device, strict=True):
        g = pad_batch(g, 4)
        x, m = prep.evaluate(jnp.asarray(d["image"]), jnp.asarray(d["mask"]), None)
        np.testing.assert_array_equal(np.asarray(x), g["image"])
        np.testing.assert_array_equal(np.asarray(m), g["mask"])
        np.testing.assert_array_equal(d["valid"], g["valid"])


def test_epoch_order_shards_and_state():
    n = 26
    split = ArraySplit(
        np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8),
        np.zeros((n, 2, 2, 1), np.uint8),
        np.zeros(n, np.uint8),
    )

    def ids(batch):
        return batch["image"][:, 0, 0, 0].tolist()

    one = [ids(b) for b in Batches(split, batch_size=8, train=True, seed=1, epoch=3,
                                   process_index=0, process_count=1)]  # fmt: skip
    assert len(one) == 3 and len(set(sum(one, []))) == 24  # 26 // 8 batches, no repeats
    other = [ids(b) for b in Batches(split, batch_size=8, train=True, seed=1, epoch=4,
                                     process_index=0, process_count=1)]  # fmt: skip
    assert one != other  # a new order every epoch
    # Two processes: each gathers its half of every global batch of 8.
    halves = [
        [
            ids(b)
            for b in Batches(
                split, batch_size=4, train=True, seed=1, epoch=3, process_index=p, process_count=2
            )
        ]  # fmt: skip
        for p in range(2)
    ]
    assert [a + b for a, b in zip(*halves, strict=True)] == one
    evals = [
        list(Batches(split, batch_size=4, train=False, process_index=p, process_count=2))
        for p in range(2)
    ]
    assert [len(e) for e in evals] == [4, 4]  # ceil(26 / 8) steps on both processes
    seen = sorted(
        i for e in evals for b in e for i, ok in zip(ids(b), b["valid"], strict=True) if ok
    )
    assert seen == list(range(n))
    # Resume inside an epoch: the same remaining batches; a grain state is refused.
    it = Batches(split, batch_size=8, train=True, seed=1, epoch=3, process_count=1,
                 process_index=0, put=lambda b: ids(b))  # fmt: skip
    first = next(it)
    state = it.get_state()
    again = Batches(split, batch_size=8, train=True, seed=1, epoch=3, process_count=1,
                    process_index=0, put=lambda b: ids(b))  # fmt: skip
    again.set_state(state)
    assert [first, *again] == one and json.loads(state) == {"in_memory_batch": 1}
    with pytest.raises(ValueError, match="not a state of the in-memory"):
        again.set_state(b'{"next_index": 3}')


def test_decode_resizes_checks_and_sizes():
    odd = [
        {"image": np.full((h, w), 9, np.uint8), "mask": np.ones((h, w, 1), np.uint8)}
        for h, w in ((10, 14), (12, 8))
    ]
    split = decode_split(odd, size=(8, 8))
    assert split.images.shape == (2, 8, 8, 1) and split.mask_max.tolist() == [1, 1]
    with pytest.raises(ValueError, match="differ in size need an image_size"):
        decode_split(odd, size=None)
    with pytest.raises(ValueError, match="expected uint8"):
        decode_split(
            [{"image": np.zeros((4, 4, 3)), "mask": np.zeros((4, 4), np.uint8)}], size=None
        )
    assert stored_size([[0, 32], [3, 64], [6, 48]]) == (64, 64)
    assert split_bytes(10, (4, 5), 3) == 10 * 4 * 5 * 4


# --------------------------------------------------------------------------- steps and loop


def test_eval_step_on_uint8_equals_float32():
    from dibe_jax.train import loop, step

    config = tiny_config()
    tg, eg, state = loop.make_state(config, in_channels=3)
    mesh = step.make_mesh()
    steps = loop.loss_steps(config, tg, eg, mesh, num_classes=1)
    state = step.replicate(state, steps.replicated)
    data = _examples(4)
    batch = {
        "image": np.stack([e["image"] for e in data]),
        "mask": np.stack([e["mask"] for e in data]),
        "valid": np.array([True, True, True, False]),
    }
    as_float = {**batch, "image": aug.to_float(batch["image"])}
    totals = step.zero_totals(1)
    a = steps.evaluate(state, step.shard_batch(batch, mesh), totals)
    b = steps.evaluate(state, step.shard_batch(as_float, mesh), totals)
    assert step.read_totals(a) == step.read_totals(b)


# ``sources``: the tiny in-memory data of conftest.py (16 training, 8 validation examples).


def test_budget_chooses_the_path_and_device_refuses(sources, tmp_path):
    assert train.build(tiny_config(), sources).train_pipeline == "device"  # auto, it fits
    built = train.build(tiny_config(**{"data.memory_budget_mb": 0}), sources)
    assert built.train_pipeline == "grain" and built.eval_arrays is None
    config = tiny_config(**{"data.pipeline": "device", "data.memory_budget_mb": 0})
    with pytest.raises(
        train.ConfigError, match=r"^data.pipeline: 'device' .* data.memory_budget_mb=0 "
    ):
        train.train_and_evaluate(config, tmp_path / "r", sources=sources)
    assert not (tmp_path / "r").exists()
    with pytest.raises(train.ConfigError, match="data.pipeline: expected one of auto, device"):
        train.validate(tiny_config(**{"data.pipeline": "gpu"}), in_memory=True)


class _Lazy(Sequence):
    """A custom sequence: ``auto`` keeps it on grain, ``device`` decodes it."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_mask_values_outside_the_classes_are_refused_at_decode(sources, tmp_path):
    bad = [dict(e) for e in make_examples(8, 2)]
    bad[3]["mask"] = bad[3]["mask"].copy()
    bad[3]["mask"][0, 0] = 5
    config = tiny_config(**{"data.pipeline": "device"})
    with pytest.raises(train.ConfigError, match=r"train example 3 .*\[0, 5\].* 2 classes"):
        train.train_and_evaluate(config, tmp_path / "r", sources={**sources, "train": _Lazy(bad)})
    stacked = ArraySource(
        {"image": np.stack([e["image"] for e in bad]), "mask": np.stack([e["mask"] for e in bad])}
    )
    with pytest.raises(train.ConfigError, match=r"validation example 3 .*\[0, 5\]"):
        train.train_and_evaluate(
            tiny_config(), tmp_path / "r", sources={**sources, "validation": stacked}
        )
    assert not (tmp_path / "r").exists()
    assert (
        train.build(tiny_config(), {**sources, "train": _Lazy(sources["train"])}).train_arrays
        is None
    )


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_device_path_resumed_mid_epoch_equals_uninterrupted(sources, tmp_path, monkeypatch, caplog):
    import logging

    from dibe_jax.data import in_memory

    config = tiny_config(
        epochs=2, batch_size=4, checkpoint_every_steps=1, **{"data.pipeline": "device"}
    )
    whole = train.train_and_evaluate(config, tmp_path / "whole", sources=sources)
    real = in_memory.Batches.__next__
    calls = []

    def crash_on_sixth_training_batch(self):
        batch = real(self)  # StopIteration at an epoch's end passes
        if self.train:
            calls.append(1)
            if len(calls) == 6:  # 4 batches per epoch: the 2nd batch of epoch 2
                raise _Crash
        return batch

    monkeypatch.setattr(in_memory.Batches, "__next__", crash_on_sixth_training_batch)
    with pytest.raises(_Crash):
        train.train_and_evaluate(config, tmp_path / "run", sources=sources)
    monkeypatch.setattr(in_memory.Batches, "__next__", real)
    with caplog.at_level(logging.INFO, logger="dibe_jax"):
        resumed = train.train_and_evaluate(
            train.load_config(tmp_path / "run"), tmp_path / "run", resume=True, sources=sources
        )
    assert "from step 5 (epoch 2 of 2, mid-epoch)" in caplog.text
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {
        k: v for k, v in whole.items() if k != "seconds"
    }
