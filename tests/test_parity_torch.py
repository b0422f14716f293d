"""Step-for-step parity of the library's U-Net training step with PyTorch (small version of
``experiments/parity_torch.py``; skipped when PyTorch is not installed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

# PyTorch is imported by the tests, not at collection: a test process that runs none of
# them never loads it.
if importlib.util.find_spec("torch") is None:
    pytest.skip("PyTorch is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `experiments` and `benchmarks` are not installed
    sys.path.insert(0, str(ROOT))

from experiments import parity_torch as pt  # noqa: E402  (after the importorskip)

# 3 stages on 32x32: the deepest BatchNorm sees n = 4 * 4 * 4 = 64 values per channel, so
# torch's unbiased running variance is visibly (1/63) off flax's.
SMALL = dict(width=4, size=32, batch=4, steps=8, num_stages=3, kernel_init="torch_default")


@pytest.fixture(scope="module", autouse=True)
def deterministic_torch():
    # Deterministic single-threaded PyTorch for this module only; restored afterwards.
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("loss", pt.LOSSES)
def test_torch_loss_port_matches(loss):
    check = pt.check_torch_loss(loss)
    assert check["value"] < 1e-6
    assert check["grad"] < 1e-5


@pytest.mark.slow  # 8 training steps in both frameworks, layer by layer for DIBE
@pytest.mark.parametrize("loss", pt.LOSSES)
def test_training_steps_match_pytorch(loss):
    # The layer-by-layer check once (DIBE); the step-for-step check for both losses.
    report = pt.run_parity(loss=loss, blocks=loss == "dibe", **SMALL)
    assert len(report["losses"]) == SMALL["steps"]
    # The targets; for DIBE no tighter than 10x what float32 rounding alone gives (two PyTorch
    # runs one ulp apart): its weights jump where a logit crosses 0 (Eq. 18), so a pixel that
    # rounds to the other side changes the step by a finite amount and the runs drift apart.
    floor = 10 if loss == "dibe" else 0
    assert max(report["loss_rel"]) < max(1e-4, floor * max(report["loss_rel_floor"]))
    assert report["params"] < max(1e-3, floor * report["params_floor"]), report["params"]
    assert report["logits"][0] < max(1e-2, floor * report["logits_floor"]), report["logits"]
    assert report["bn_mean"][0] < 1e-2 and report["bn_var"][0] < 1e-2
    if loss == "dibe":  # block outputs and first-step gradients agree layer by layer
        assert max(report["forward"].values()) < 1e-4
        assert max(report["grad"].values()) < 1e-3, pt.worst(report["grad"])
    # nn.BatchNorm2d trains identically; only its running variance differs, by n / (n - 1).
    assert report["same_training"]
    assert report["bn_var_torch_default"][0] > max(1e-3, 10 * report["bn_var_corrected"][0])
    assert report["bn_var_corrected"][0] < 1e-3


def test_mapping_round_trip():
    rng = np.random.default_rng(0)
    for path, shape in (
        (("backbone", "units", 0, "conv1", "conv", "kernel"), (3, 3, 2, 5)),
        (("ups", 1, "kernel"), (2, 2, 6, 3)),
        (("decoder", 0, "conv2", "bn", "var"), (7,)),
    ):
        value = rng.standard_normal(shape).astype(np.float32)
        back = pt.to_jax_layout(path, pt.to_torch_layout(path, value))
        np.testing.assert_array_equal(back, value)
    assert pt.torch_key(("decoder", 2, "conv1", "bn", "scale")) == "decoder.2.conv1.bn.weight"


def test_transposed_unet_forward_matches():
    from flax import nnx

    from benchmarks.models import torch_unet
    from dibe_jax import models

    model = models.create(
        "unet",
        in_channels=3,
        width=4,
        num_stages=1,
        upsampling="transposed",
        kernel_init="torch_default",
        rngs=nnx.Rngs(0),
    )
    tm = torch_unet(4, num_stages=1, upsampling="transposed", bn_running_var="biased")
    pt.copy_to_torch(model, tm)
    batch = pt.make_batches(1, batch=2, size=16)[0]
    report = pt.compare_blocks(model, tm, batch, "bce")
    assert max(report["forward"].values()) < 1e-4, report["forward"]
    assert max(report["grad"].values()) < 1e-3, pt.worst(report["grad"])


def test_torch_default_init_matches_pytorch():
    # The model of the parity tests (compiled initialisers are reused).
    stats = pt.check_init_statistics(width=4, num_stages=3, compare_he=False)
    assert stats["bound"] < 0.1  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases
    assert stats["std"] < 0.3  # sampling noise of the smallest tensors (64 values)


def test_loss_gradient_at_zero_logit_matches_pytorch():
    # A U-Net whose head has zero bias and a pixel whose last features are all ReLU'd to 0
    # outputs exactly 0 there (he_normal_fan_out init, small widths): its gradient differs.
    import jax
    import jax.numpy as jnp
    import torch

    from dibe_jax import losses

    z = jnp.zeros((1, 2))
    y = jnp.array([[0.0, 1.0]])
    grad = jax.grad(lambda z: jnp.sum(losses.bce(z, y)))(z)
    zt = torch.zeros((1, 2), requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(
        zt, torch.tensor([[0.0, 1.0]]), reduction="sum"
    ).backward()
    # bce is the per-image mean over 2 pixels: d/dz = (p - y) / 2 = (0.25, -0.25).
    np.testing.assert_allclose(np.asarray(grad), zt.grad.numpy() / 2, atol=1e-7)


def test_kernel_init_is_a_model_option():
    from flax import nnx

    from dibe_jax import models

    for name in ("unet", "attention_unet"):
        assert "kernel_init" in models.config_keys(name)
    config = pt.make_config(kernel_init="torch_default")
    assert config.model.options["kernel_init"] == "torch_default"
    with pytest.raises(ValueError, match="kernel_init"):
        models.create("unet", in_channels=3, width=4, kernel_init="xavier", rngs=nnx.Rngs(0))


def test_cfd_summary_groups_runs_and_leaves_out_unfinished_ones(tmp_path):
    import json

    def write(path: Path, ious: list[float]) -> None:
        path.mkdir(parents=True)
        lines = [
            json.dumps({"epoch": 2 * (i + 1), "iou": v, "oii": 1.0 - v}) for i, v in enumerate(ious)
        ]
        (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    write(tmp_path / "init_study" / "torch_default_seed0", [0.0, 0.2])
    write(tmp_path / "init_study" / "torch_default_seed1", [0.0, 0.4])
    write(tmp_path / "init_study" / "torch_default_seed2", [0.0])  # still training
    write(tmp_path / "init_study" / "focal_tversky_torch_default_seed0", [0.1, 0.5])
    write(tmp_path / "torch_cfd" / "seed0", [0.0, 0.3])
    rows = {
        tuple(c.strip() for c in line.split("|")[1:4]): line
        for line in pt.cfd_summary(tmp_path).splitlines()[2:]
    }
    assert set(rows) == {
        ("dibe", "JAX (dibe_jax)", "torch_default"),
        ("focal_tversky", "JAX (dibe_jax)", "torch_default"),
        ("dibe", "PyTorch", "torch_default"),
    }
    dibe = rows[("dibe", "JAX (dibe_jax)", "torch_default")]
    assert "| 0, 1 |" in dibe and "0.300 ± 0.141" in dibe  # final IoU of seeds 0 and 1
    assert "0.150 ± 0.191" in dibe  # both evaluations of both seeds pooled
