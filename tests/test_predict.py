"""Prediction at native resolution (dibe_jax.train.predict): windows, blending, files, reports.

Fake forwards (a fixed 5x5 convolution: translation-equivariant, receptive radius 2) test
the sliding-window core exactly; the suite's shared tiny run (``finished_run`` of
``conftest.py``: a one-stage U-Net trained for two epochs on 32x32 synthetic cracks) tests
the whole path from a run's checkpoint to PNGs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from dibe_jax.datasets import generate_example
from dibe_jax.train import predict as predict_mod
from dibe_jax.train.predict import (
    PredictReport,
    Written,
    blend_weights,
    load_forward,
    predict,
    predict_logits,
    window_starts,
)

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DIBE_JAX_DATA", ROOT.parent / "shared" / "data"))

KERNEL = np.random.default_rng(0).normal(size=(5, 5, 3, 2)).astype(np.float32) / 5


def _conv(x):
    return jax.lax.conv_general_dilated(
        x, KERNEL, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_forward(multiple: int = 1, minimum: int = 1):
    """A jitted 5x5 convolution ``[N, h, w, 3] -> [N, h, w, 2]`` that checks its input size
    the way the models do, and counts its traces (one per compiled input shape)."""
    traces: list[tuple[int, ...]] = []

    @jax.jit
    def forward(x):
        traces.append(x.shape)
        assert x.shape[1] % multiple == 0 and x.shape[2] % multiple == 0, x.shape
        assert min(x.shape[1:3]) >= minimum, x.shape
        return _conv(x)

    forward.traces = traces
    return forward


def grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    """Tiles laid out row-major ``cols`` to a row: the canvas ``[rows*T, cols*T, ...]``."""
    rows = [np.concatenate(tiles[i : i + cols], axis=1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)


def interior(shape: tuple[int, int], tile: int, margin: int) -> np.ndarray:
    """``bool [H, W]``: pixels at least ``margin`` away from every tile border."""
    r, c = np.arange(shape[0]) % tile, np.arange(shape[1]) % tile
    keep_r = (r >= margin) & (r < tile - margin)
    keep_c = (c >= margin) & (c < tile - margin)
    return keep_r[:, None] & keep_c[None, :]


@pytest.fixture
def tiny_run(finished_run) -> Path:
    """A finished run (shared, read only): U-Net width 4, one stage (sizes: multiples of 2;
    receptive radius 10 px), trained on 32x32 images."""
    return finished_run[0]


# -------------------------------------------------------------------------- the blending core


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (32, 32), (64, 20), (160, 160)])
def test_blend_weights_are_positive_everywhere_with_peak_one(shape):
    for sigma_scale in (0.125, 0.01):  # a tiny sigma would underflow to 0 without the floor
        w = blend_weights(shape, sigma_scale=sigma_scale)
        assert w.shape == shape and w.dtype == np.float32
        assert w.min() > 0 and w.max() == 1
        np.testing.assert_array_equal(w, w[::-1, ::-1])  # symmetric about the centre


def test_blend_weights_suppress_window_borders():
    w = blend_weights((160, 160)).astype(np.float64)  # sigma = 160 / 8 = 20 px
    # rows 0 and 80 lie 79.5 and 0.5 px from the centre (79.5): exp(-(79.5² - 0.5²) / 2σ²)
    assert w[0, 80] / w[80, 80] == pytest.approx(np.exp(-(79.5**2 - 0.5**2) / 800), rel=1e-5)
    assert w[0, 80] < 4e-4
    assert w[0, 0] == pytest.approx(1e-6)  # exp(-15.8) ≈ 1.4e-7 at the corner: the floor


def test_window_starts_cover_the_image_on_the_stride_grid():
    for size, window, overlap, multiple in [
        (480, 160, 0.25, 16),
        (197, 64, 0.5, 8),
        (1000, 96, 0.9, 1),
        (64, 64, 0.25, 4),
    ]:
        starts = window_starts(size, window, overlap, multiple=multiple)
        assert starts[0] == 0 and starts[-1] == size - window
        assert all(
            0 < b - a <= max(multiple, window * (1 - overlap))
            for a, b in zip(starts, starts[1:], strict=False)
        )
        if size % multiple == 0:
            assert all(s % multiple == 0 for s in starts)


@pytest.mark.parametrize("size", [(197, 263), (40, 50)])  # sliding windows, whole image
def test_constant_forward_gives_back_the_constant_exactly(size):
    consts = np.array([0.1234567, -3.75], np.float32)

    def forward(x):
        return np.broadcast_to(consts, (*x.shape[:3], 2))

    image = np.random.default_rng(1).random((*size, 3), dtype=np.float32)
    z = predict_logits(forward, image, multiple=8, window=64, overlap=0.25, batch_size=3)
    assert z.shape == (*size, 2) and z.dtype == np.float32
    np.testing.assert_array_equal(z, np.broadcast_to(consts, z.shape))


@pytest.mark.parametrize("size", [(197, 263), (1, 1), (5, 300), (63, 65), (300, 7)])
@pytest.mark.parametrize("window", [512, 64, (48, 80)])
def test_output_size_equals_input_size(size, window):
    forward = conv_forward(multiple=16, minimum=32)
    image = np.random.default_rng(2).random((*size, 3), dtype=np.float32)
    z = predict_logits(forward, image, multiple=16, window=window, minimum=32, batch_size=4)
    assert z.shape == (*size, 2) and z.dtype == np.float32 and np.isfinite(z).all()


def test_canvas_equals_its_tiles_away_from_tile_borders_fixed_convolution():
    """Six 64x64 tiles, each predicted whole (one window), against the 128x192 canvas they
    form, predicted in overlapping 64x64 windows (default overlap 0.25).

    Away from tile borders (2 px, the convolution's radius) a tile's logits are the exact
    convolution. The canvas differs only where a pixel lies within 2 px of an inner window
    edge, whose window saw zero padding there; the Gaussian weights such a pixel about 1e-3
    of a window centre. Tolerance: max |diff| <= 0.02 and mean |diff| <= 1e-3 for logits
    whose mean magnitude is about 1 (measured: 0.008 and 1e-4).
    """
    rng = np.random.default_rng(3)
    tiles = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(6)]
    canvas = grid(tiles, 3)
    forward = conv_forward(multiple=8)
    kw = dict(multiple=8, window=64, overlap=0.25, batch_size=4)
    z_canvas = predict_logits(forward, canvas, **kw)
    z_tiles = grid([predict_logits(forward, t, **kw) for t in tiles], 3)
    np.testing.assert_array_equal(
        z_tiles[..., 0][interior((128, 192), 64, 2)],
        np.asarray(_conv(canvas[None]))[0, ..., 0][interior((128, 192), 64, 2)],
    )
    diff = np.abs(z_canvas - z_tiles)[interior((128, 192), 64, 2)]
    assert np.abs(z_canvas).mean() > 0.5
    assert diff.max() <= 0.02 and diff.mean() <= 1e-3


def test_one_compilation_per_window_shape():
    forward = conv_forward(multiple=8)
    rng = np.random.default_rng(4)
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return forward(x)

    for size in [(100, 130), (197, 263), (64, 300), (300, 64), (65, 65)]:
        predict_logits(
            counting,
            rng.random((*size, 3), dtype=np.float32),
            multiple=8,
            window=64,
            overlap=0.25,
            batch_size=4,
        )
    assert forward.traces == [(4, 64, 64, 3)]  # every window batch has the same shape
    assert set(calls) == {4}  # the last batch of each image is padded
    # whole images: one compilation per padded shape (padded to the multiple only)
    for size in [(30, 30), (31, 25), (32, 32), (40, 33)]:
        predict_logits(
            forward, rng.random((*size, 3), dtype=np.float32), multiple=8, window=64, batch_size=4
        )
    assert forward.traces[1:] == [(1, 32, 32, 3), (1, 40, 40, 3)]


def test_predict_logits_rejects_bad_arguments_naming_them():
    image = np.zeros((10, 10, 3), np.float32)
    forward = conv_forward()
    for kwargs, name in [
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"window": 0}, "window"),
        ({"window": (8,)}, "window"),
        ({"window": "big"}, "window"),
        ({"batch_size": 0}, "batch_size"),
        ({"multiple": 0}, "multiple"),
    ]:
        args = {"multiple": 8, "window": 8, "overlap": 0.25, "batch_size": 2, **kwargs}
        with pytest.raises(ValueError, match=f"^{name} "):
            predict_logits(forward, image, **args)
    with pytest.raises(ValueError, match=r"forward must map"):
        predict_logits(lambda x: x[:, :4], image, multiple=8, window=8)


# ------------------------------------------------------------------ a real run, end to end


def test_trained_unet_canvas_equals_its_tiles_end_to_end(tiny_run, tmp_path):
    """The tiny U-Net (trained on 32x32 images; receptive radius 10 px) on four 96x96 tiles
    and on the 192x192 canvas they form.

    1. Default window (the training size, 32) and overlap: the window step (24, on the
       network's stride grid of 2) divides the tile, so the windows covering a tile's
       interior (32 px from its borders) are the same windows in both predictions: the
       logits agree to float32 rounding (1e-5), and the written masks exactly.
    2. Tiles whole (``window=96``) against the canvas in 96x96 windows: every canvas pixel
       mixes windows that saw other context. Tolerance, 32 px from tile borders: mean
       |diff| <= 0.05 x the logits' standard deviation and the masks agree on >= 99 % of
       the pixels (measured: 0.003 x std, 100 %).
    """
    run = load_forward(tiny_run)
    assert run.image_size == (32, 32) and run.multiple == 2 and run.in_channels == 3
    rng = np.random.default_rng(5)
    tiles = [generate_example(rng, 96, 60)[0] for _ in range(4)]
    canvas = grid(tiles, 2)
    inside = interior((192, 192), 96, 32)

    kw = dict(multiple=run.multiple, window=run.image_size, overlap=0.25, batch_size=8)
    z_canvas = predict_logits(run.forward, canvas.astype(np.float32) / 255, **kw)
    z_tiles = grid(
        [predict_logits(run.forward, t.astype(np.float32) / 255, **kw) for t in tiles], 2
    )
    np.testing.assert_allclose(z_canvas[inside], z_tiles[inside], atol=1e-5, rtol=0)

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(canvas).save(folder / "canvas.png")
    for i, t in enumerate(tiles):
        Image.fromarray(t).save(folder / f"tile{i}.png")
    report = predict(tiny_run, folder, tmp_path / "out", progress=False)
    masks = {w.input.stem: np.asarray(Image.open(w.mask)) for w in report.written}
    assert masks["canvas"].shape == (192, 192)
    m_tiles = grid([masks[f"tile{i}"] for i in range(4)], 2)
    np.testing.assert_array_equal(masks["canvas"][inside], m_tiles[inside])
    np.testing.assert_array_equal(masks["canvas"] == 255, z_canvas[..., 0] >= 0)

    kw["window"] = 96
    z_canvas = predict_logits(run.forward, canvas.astype(np.float32) / 255, **kw)
    z_tiles = grid(
        [predict_logits(run.forward, t.astype(np.float32) / 255, **kw) for t in tiles], 2
    )
    diff = np.abs(z_canvas - z_tiles)[inside]
    assert diff.mean() <= 0.05 * z_canvas[inside].std()
    assert np.mean((z_canvas >= 0)[inside] == (z_tiles >= 0)[inside]) >= 0.99


@pytest.mark.parametrize("window", [None, 512])  # sliding windows of 32, the whole image
def test_predict_writes_masks_of_the_input_size(tiny_run, tmp_path, window):
    image = generate_example(np.random.default_rng(6), 300, 60)[0][:197, :263]
    Image.fromarray(image).save(tmp_path / "odd.png")
    report = predict(
        tiny_run, tmp_path / "odd.png", tmp_path / "out", window=window, progress=False
    )
    (w,) = report.written
    mask = np.asarray(Image.open(w.mask))
    overlay = np.asarray(Image.open(w.overlay))
    assert mask.shape == (197, 263) and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == (197, 263, 3)
    assert w.defect_fraction == pytest.approx(np.mean(mask == 255))
    hit = mask == 255
    if hit.any():  # defects drawn in red: red channel up, green and blue down
        assert (overlay[hit][:, 0] >= image[hit][:, 0]).all()
        assert (overlay[hit][:, 1] <= image[hit][:, 1]).all()
    np.testing.assert_array_equal(overlay[~hit], image[~hit])


def test_unreadable_files_are_skipped_and_reported(tiny_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    examples = make_examples(3, 7)
    for i, ex in enumerate(examples[:2]):
        Image.fromarray(ex["image"]).save(folder / f"good{i}.png")
    Image.fromarray(examples[2]["image"]).save(folder / "good0.jpg")  # same output name
    png = (folder / "good1.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "text.png").write_text("not an image\n")
    (folder / "notes.txt").write_text("ignored: not an image suffix\n")

    report = predict(tiny_run, folder, tmp_path / "out", progress=False)
    assert isinstance(report, PredictReport) and all(isinstance(w, Written) for w in report.written)
    assert [w.input.name for w in report.written] == ["good0.jpg", "good1.png"]
    skipped = {p.name: reason for p, reason in report.skipped}
    assert set(skipped) == {"good0.png", "text.png", "truncated.png"}
    assert "unreadable or truncated" in skipped["text.png"]
    assert "unreadable or truncated" in skipped["truncated.png"]
    assert "good0.jpg" in skipped["good0.png"]
    for w in report.written:
        assert np.asarray(Image.open(w.mask)).shape == (32, 32)
        assert np.asarray(Image.open(w.overlay)).shape == (32, 32, 3)
        assert 0 <= w.defect_fraction <= 1
    out_files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out_files == [
        "good0_mask.png",
        "good0_overlay.png",
        "good1_mask.png",
        "good1_overlay.png",
    ]  # no temporary files left
    text = report.summary()
    assert text.startswith(f"wrote 2 masks to {tmp_path / 'out'}; skipped 3 files: ")
    assert "text.png (unreadable or truncated image" in text


def test_bad_arguments_raise_value_error_naming_the_argument(tmp_path):
    """Arguments are checked before the run is loaded (this workdir holds no run)."""
    workdir, out = tmp_path / "no_run", tmp_path / "out"
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(make_examples(1, 0)[0]["image"]).save(folder / "a.png")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    cases = [
        (dict(inputs=tmp_path / "missing.png"), r"^inputs: .*missing\.png does not exist"),
        (dict(out=folder), r"^out: .* is the folder of the inputs"),
        (dict(inputs=folder / "a.png", out=folder), r"^out: "),
        (dict(inputs=empty), r"^inputs: folder .*empty_dir holds no image files"),
        (dict(overlap=1.0), r"^overlap must be in \[0, 1\)"),
        (dict(window=0), r"^window must be positive"),
        (dict(window=(32, 32, 3)), r"^window must be an int or \(rows, cols\)"),
        (dict(batch_size=0), r"^batch_size must be a positive int"),
    ]
    for kwargs, pattern in cases:
        args = {"inputs": folder, "out": out, **kwargs}
        with pytest.raises(ValueError, match=pattern):
            predict(workdir, args.pop("inputs"), args.pop("out"), progress=False, **args)
    assert not out.exists()  # nothing was created
    with pytest.raises(FileNotFoundError, match="no_run"):
        predict(workdir, folder, out, progress=False)


def test_png_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "x_mask.png"
    predict_mod._save_png_atomic(np.full((4, 5), 255, np.uint8), path)
    assert np.asarray(Image.open(path)).shape == (4, 5)
    before = path.read_bytes()

    def broken_save(self, fp, format=None, **params):  # a crash half-way through the write
        fp.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        predict_mod._save_png_atomic(np.zeros((4, 5), np.uint8), path)
    assert path.read_bytes() == before  # the old file is intact, no temporary file is left
    assert [p.name for p in tmp_path.iterdir()] == ["x_mask.png"]


# ------------------------------------------------------------------ the demonstration script


@pytest.mark.slow
def test_predict_vs_eval_quick_mode(tmp_path):
    crackforest = SHARED_DATA / "crackforest"
    if not (crackforest / "image").is_dir() or not (crackforest / "groundTruth").is_dir():
        pytest.skip(
            f"CrackForest not found at {crackforest} (set DIBE_JAX_DATA to the folder "
            "holding crackforest/)"
        )
    import json

    sys.path.insert(0, str(ROOT))  # `experiments` is not installed; `python -m pytest` has it
    from experiments import predict_vs_eval

    workdir = tmp_path / "run"
    assert (
        predict_vs_eval.main(
            [
                "--quick",
                "--workdir",
                str(workdir),
                "--data",
                str(crackforest),
                "--tfds-dir",
                str(tmp_path / "tfds"),
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((workdir / "predict_vs_eval.json").read_text())
    assert result["predict_images"]["images"] == 2 and not result["predict_images"]["skipped"]
    assert 0 <= result["eval_iou"] <= 1 and 0 <= result["predict_iou"] <= 1
    assert result["difference"] == pytest.approx(result["predict_iou"] - result["eval_iou"])
    # the same pixels are pooled in both: 2 images of 320x480 = 12 tiles of 160x160
    ev, pr = result["eval_tiles"], result["predict_images"]
    assert sum(ev[k] for k in ("tp", "fp", "fn", "tn")) == 2 * 320 * 480
    assert sum(pr[k] for k in ("tp", "fp", "fn", "tn")) == 2 * 320 * 480
    assert ev["tp"] + ev["fn"] == pr["tp"] + pr["fn"]  # the same ground truth
    assert (workdir / "predict" / "061_mask.png").exists()


# ------------------------------------------------------------------ bit depth and training scale


def test_16_bit_copy_predicts_the_mask_of_its_8_bit_original(tiny_run, tmp_path):
    gray = generate_example(np.random.default_rng(9), 150, 48)[0].mean(axis=-1).astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(gray).save(folder / "a8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "a16.png")
    assert Image.open(folder / "a16.png").mode == "I;16"
    report = predict(tiny_run, folder, tmp_path / "out", progress=False)
    masks = {w.input.name: np.asarray(Image.open(w.mask)) for w in report.written}
    np.testing.assert_array_equal(masks["a16.png"], masks["a8.png"])
    overlays = [np.asarray(Image.open(w.overlay)) for w in report.written]
    np.testing.assert_array_equal(overlays[0], overlays[1])


@pytest.fixture(scope="module")
def half_scale_run(tmp_path_factory) -> Path:
    """A one-epoch run on 32x32 examples trained at 16x16 (``native_size`` 32, scale 0.5)."""
    from dibe_jax import train

    workdir = tmp_path_factory.mktemp("half")
    sources = {"train": make_examples(16, 0), "validation": make_examples(8, 1)}
    train.train_and_evaluate(
        tiny_config(epochs=1, **{"data.image_size": 16}), workdir, sources=sources
    )
    return workdir


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_predict_applies_the_training_scale(half_scale_run, tmp_path):
    from dibe_jax.data import augment

    info = json.loads((half_scale_run / "model.json").read_text())
    assert info["native_size"] == [32, 32] and info["image_size"] == 16
    image = generate_example(np.random.default_rng(4), 150, 48)[0][:48, :40]
    Image.fromarray(image).save(tmp_path / "x.png")
    run = load_forward(half_scale_run)
    assert run.resize == ("factor", (0.5, 0.5))

    def expected(scaled: tuple[int, int]) -> np.ndarray:
        seen = augment.resize(image, np.zeros((48, 40, 1), np.uint8), scaled)[0]
        z = predict_logits(
            run.forward, augment.to_float(seen), multiple=run.multiple, window=run.image_size,
            minimum=run.minimum,
        )  # fmt: skip
        return (predict_mod.resize_logits(z, (48, 40))[..., 0] >= 0).astype(np.uint8) * 255

    for scale, size in (("train", (24, 20)), ("native", (48, 40))):
        (w,) = predict(
            half_scale_run, tmp_path / "x.png", tmp_path / scale, scale=scale, progress=False
        ).written
        mask = np.asarray(Image.open(w.mask))
        assert mask.shape == (48, 40)
        np.testing.assert_array_equal(mask, expected(size))
    with pytest.raises(ValueError, match="scale: expected one of train, native"):
        predict(half_scale_run, tmp_path / "x.png", tmp_path / "o", scale="half")


def test_training_resize_of_runs_without_native_size():
    """Older runs' model.json lacks native_size: the config and the dataset say it."""
    from dibe_jax import train

    def config(dataset, size):
        return train.override(train.Config(), {"data.dataset": dataset, "data.image_size": size})

    info = {"image_size": [96, 96]}
    resize = predict_mod.training_resize
    assert resize(config("magnetic_tile/crack", 96), info) == ("fixed", (96, 96))
    assert resize(config("crackforest", 96), info) == ("factor", (0.6, 0.6))
    assert resize(config("crackforest", None), {"image_size": [160, 160]}) == ("none", None)


@pytest.mark.slow
def test_predict_scale_quick_mode(tmp_path):
    crack = SHARED_DATA / "magnetic_tile" / "MT_Crack" / "Imgs"
    if not crack.is_dir():
        pytest.skip(f"MTSDD not found at {crack.parents[1]} (set DIBE_JAX_DATA)")
    sys.path.insert(0, str(ROOT))  # `experiments` is not installed; `python -m pytest` has it
    from experiments import predict_scale

    workdir = tmp_path / "run"
    argv = ["--quick", "--workdir", str(workdir), "--data", str(crack.parents[1])]
    assert predict_scale.main([*argv, "--no-progress"]) == 0
    result = json.loads((workdir / "predict_scale.json").read_text())
    assert result["validation_images"] == 2
    assert json.loads((workdir / "model.json").read_text())["native_size"] is None  # mixed sizes
    for key in ("predict_train", "predict_native"):
        r = result[key]
        assert r["images"] == 2 and 0 <= r["iou"] <= 1
        # pooled at the native size: the same pixels and ground truth at both scales
        assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == sum(
            np.asarray(Image.open(crack / f"{p.stem}.png")).size
            for p in (workdir / "predict_inputs").iterdir()
        )
    assert result["predict_train"]["tp"] + result["predict_train"]["fn"] == (
        result["predict_native"]["tp"] + result["predict_native"]["fn"]
    )
    assert result["difference"] == pytest.approx(result["predict_iou"] - result["eval_iou"])
    masks = sorted((workdir / "predict_train").glob("*_mask.png"))
    assert len(masks) == 2
