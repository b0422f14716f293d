"""Export of a run (dibe_jax.train.export, ``dibe-jax export``): the StableHLO and ONNX files
give the JAX model's logits on a real CrackForest image, export.json says what a consumer
needs, and refused inputs exit 2 writing nothing.

One tiny run (U-Net width 4, 1 stage, 32 px synthetic cracks, 1 epoch) is trained and exported
once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from dibe_jax import cli
from dibe_jax.data import augment
from dibe_jax.data.images import read_image
from dibe_jax.train import export as ex
from dibe_jax.train.predict import load_forward

pytest.importorskip("jax2onnx")
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, tiny_config  # noqa: E402

# End to end (trainings in subprocesses or conversions): run by `make test-slow`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DIBE_JAX_DATA", ROOT.parent / "shared" / "data"))
CFD_IMAGE = SHARED_DATA / "crackforest" / "image" / "001.jpg"  # 480 x 320 RGB


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from dibe_jax import train

    workdir = tmp_path_factory.mktemp("export") / "run"
    sources = {"train": make_examples(16, 0), "validation": make_examples(8, 1)}
    train.train_and_evaluate(tiny_config(epochs=1), workdir, sources=sources)
    return workdir


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """Both formats at CrackForest's native 320 x 480, through the command line."""
    out = tmp_path_factory.mktemp("exported") / "model"
    assert (
        cli.main(["export", "--workdir", str(run), "--out", str(out), "--size", "320", "480"]) == 0
    )
    return out


def test_both_formats_give_the_models_logits_on_a_crackforest_image(run, exported):
    if not CFD_IMAGE.is_file():
        pytest.skip(f"CrackForest not found at {CFD_IMAGE} (set DIBE_JAX_DATA)")
    x = augment.to_float(read_image(CFD_IMAGE, mode="RGB"))[None]  # [1, 320, 480, 3]
    assert x.shape == (1, 320, 480, 3)
    expected = np.asarray(load_forward(run).forward(x))
    hlo = jax.export.deserialize(bytearray((exported / "model.stablehlo.bin").read_bytes()))
    np.testing.assert_allclose(np.asarray(hlo.call(x)), expected, rtol=0, atol=1e-4)
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": x})
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    both = np.concatenate([x, x[:, ::-1]])  # the batch is symbolic: two images at once
    np.testing.assert_allclose(
        session.run(["logits"], {"image": both})[0][1],
        np.asarray(load_forward(run).forward(both[1:])[0]),
        rtol=0,
        atol=1e-4,
    )


def test_export_json_says_what_a_consumer_needs(run, exported):
    info = json.loads((exported / "export.json").read_text())
    assert info["input"]["layout"] == "NHWC" and info["input"]["dtype"] == "float32"
    assert info["input"]["channels"] == 3 and "/ 255" in info["input"]["normalisation"]
    assert info["size_rule"]["multiple"] == 2 and info["size_rule"]["exported_size"] == [320, 480]
    assert info["class_names"] == ["background", "defect"]
    assert info["decision"]["threshold"] == 0.0  # not calibrated
    for kind in ex.FORMATS:
        shape = info["shapes"][kind]
        assert shape["shape"][1:] == [320, 480, 3] and isinstance(shape["shape"][0], str)
        assert shape["fixed"] == ["height", "width"] and shape["why_fixed"]  # bilinear upsampling
        assert info["verified"]["max_abs_logit_difference"][kind] <= ex.TOLERANCE
    assert info["checkpoint_step"] == load_forward(run).step


# ----------------------------------------------------------------------------- refusals


def _fails(capsys, args: list[str], match: str) -> None:
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dibe-jax: error:") and match in err[0], err


def test_refused_inputs_exit_2_writing_nothing(run, exported, tmp_path, capsys):
    before = _snapshot(run), _snapshot(exported)
    out = tmp_path / "out"
    base = ["export", "--workdir", str(run), "--out", str(out)]
    _fails(capsys, [*base, "--format", "tflite"], "--format: expected stablehlo, onnx or all")
    _fails(capsys, [*base, "--size", "33"], "--size: unet takes heights and widths")
    _fails(capsys, ["export", "--workdir", str(run), "--out", str(exported)], "is not empty")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    for name in ("config.json", "model.json"):
        shutil.copy(run / name, untrained / name)
    _fails(capsys, ["export", "--workdir", str(untrained), "--out", str(out)], "no checkpoints/")
    (untrained / "checkpoints").mkdir()
    _fails(capsys, ["export", "--workdir", str(untrained), "--out", str(out)], "no checkpoints in")
    assert not out.exists()
    assert (_snapshot(run), _snapshot(exported)) == before


def test_a_model_the_converter_cannot_express_is_refused(run, tmp_path, capsys, monkeypatch):
    import jax2onnx

    def cannot(*args, **kwargs):
        raise NotImplementedError("No ONNX handler for primitive 'reduce_precision'")

    monkeypatch.setattr(jax2onnx, "to_onnx", cannot)
    out = tmp_path / "out"
    _fails(
        capsys,
        ["export", "--workdir", str(run), "--out", str(out), "--format", "onnx"],
        "jax2onnx cannot express unet: NotImplementedError: No ONNX handler for primitive "
        "'reduce_precision'",
    )
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
