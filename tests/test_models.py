"""Tests of dibe_jax.models: shapes, parameter counts, gradients, BatchNorm modes, tracing,
SegNet's index unpooling, input checks, Monte Carlo dropout, dtypes and backbone checkpoints.

Kept fast on two CPU cores: per-model tests use tiny configurations (``width=4``, ResNet-10,
32-64 px) filled with random parameters from their abstract shapes (running the initialisers
eagerly compiles dozens of small XLA programs per model; real initialisation is exercised by the
checkpoint and Monte Carlo tests), at most three compilations per model, each with per-call XLA
options that compile these tiny graphs about five times faster on CPU. Full-size models are only
built abstractly (``nnx.eval_shape``) to count their parameters.
"""

from __future__ import annotations

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dibe_jax import models
from dibe_jax.models import ops

# name -> (tiny config, (H, W) of the training step, (H, W) of the evaluation forward).
# The configurations also cover non-default paths: transposed up-convolutions and three stages
# (attention U-Net), FCN with BatchNorm, odd sizes through SegNet's floor-mode pooling.
TINY = {
    "unet": (dict(width=4, dropout_rate=0.5), (32, 32), (48, 32)),
    "segnet": (dict(width=4, dropout_rate=0.5), (32, 32), (44, 36)),
    "pspnet": (dict(width=4, depth=10, dropout_rate=0.5), (32, 32), (40, 48)),
    "deeplabv3": (dict(width=4, depth=10, dropout_rate=0.5), (32, 32), (48, 32)),
    "fcn": (dict(width=4, batch_norm=True), (32, 32), (64, 32)),
    "attention_unet": (
        dict(width=4, num_stages=3, dropout_rate=0.5, upsampling="transposed"),
        (32, 32),
        (40, 24),
    ),
}
BATCH = 2


def _fast_compile_options() -> dict | None:
    """Per-``jit`` XLA:CPU options (no global setting): no LLVM optimisation and the classic loop
    emitters, which compile these tiny graphs ~5x faster. ``None`` off CPU or if unsupported."""
    if jax.default_backend() != "cpu":
        return None
    options = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options)(1.0)
    except Exception:  # an XLA without these options: compile normally
        return None
    return options


FAST = _fast_compile_options()


def jit(fn):
    return jax.jit(fn, compiler_options=FAST)


def test_registry_lists_all_models():
    assert models.names() == tuple(TINY)


def materialize(abstract: nnx.Module, seed: int = 0) -> nnx.Module:
    """A concrete copy of an abstract model: He-normal kernels, zero biases, identity BatchNorm,
    fresh dropout keys, all made with numpy (no XLA compilation)."""
    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(abstract)
    flat = []
    for i, (path, var) in enumerate(nnx.to_flat_state(state)):
        shape, dtype = var.get_value().shape, var.get_value().dtype
        if isinstance(var, nnx.RngKey):
            value = jax.random.wrap_key_data(np.array([0, i], np.uint32))
        elif isinstance(var, nnx.RngCount):
            value = jnp.asarray(np.zeros(shape, dtype))
        elif path[-1] in ("scale", "var"):
            value = jnp.asarray(np.ones(shape, dtype))
        elif path[-1] in ("bias", "mean"):
            value = jnp.asarray(np.zeros(shape, dtype))
        else:
            std = np.sqrt(2.0 / np.prod(shape[:-1]))
            value = jnp.asarray(rng.normal(0.0, std, shape).astype(dtype))
        flat.append((path, var.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def tiny(name: str, **extra) -> nnx.Module:
    cfg = {**TINY[name][0], **extra}
    return materialize(
        nnx.eval_shape(lambda: models.create(name, in_channels=3, rngs=nnx.Rngs(0), **cfg))
    )


def batch_stats(state) -> list[np.ndarray]:
    flat = nnx.to_flat_state(nnx.filter_state(state, nnx.BatchStat))
    return [np.asarray(v.get_value()) for _, v in flat]


def inputs(size: tuple[int, int], seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)  # numpy: no compilation per input shape
    return jnp.asarray(rng.standard_normal((BATCH, *size, 3), np.float32))


# --------------------------------------------------------------------------------------------
# Parameter counts at the paper's width, derived from the published architectures.
# Notation: a k x k convolution from i to o channels has k*k*i*o weights (+ o biases); BatchNorm
# has 2*o parameters (scale, bias; running statistics are not parameters).


def conv(k: int, i: int, o: int, bias: bool = True) -> int:
    return k * k * i * o + (o if bias else 0)


def convbn(k: int, i: int, o: int, bias: bool = False) -> int:
    return conv(k, i, o, bias) + 2 * o


# ResNet (He et al. 2016), torchvision layout without the fc layer.
def resnet_params(depth: int, in_channels: int = 3) -> int:
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    total = convbn(7, in_channels, 64)  # stem
    c_in = 64
    for stage, count in enumerate(blocks):
        f = 64 * 2**stage
        c_out = 4 * f if bottleneck else f
        for b in range(count):
            if bottleneck:
                total += convbn(1, c_in, f) + convbn(3, f, f) + convbn(1, f, 4 * f)
            else:
                total += convbn(3, c_in, f) + convbn(3, f, f)
            if b == 0 and (stage > 0 or c_in != c_out):
                total += convbn(1, c_in, c_out)  # projection shortcut
            c_in = c_out
    return total


# torchvision's published totals (ImageNet classifiers) minus the fc layer.
TORCHVISION_RESNET = {
    18: 11_689_512 - (512 * 1000 + 1000),
    34: 21_797_672 - (512 * 1000 + 1000),
    50: 25_557_032 - (2048 * 1000 + 1000),
    101: 44_549_160 - (2048 * 1000 + 1000),
}

# VGG-16 (configuration D) convolutions (in, out); torchvision vgg16 = 138,357,544 in total, of
# which the classifier fc6/fc7/fc8 is 25088*4096+4096 + 4096*4096+4096 + 4096*1000+1000.
VGG16 = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
VGG16 += [(256, 512)] + [(512, 512)] * 5
VGG16_CONVS = sum(conv(3, i, o) for i, o in VGG16)
VGG16_CLASSIFIER = (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
assert VGG16_CONVS == 138_357_544 - VGG16_CLASSIFIER == 14_714_688  # SegNet paper: "14.7M"

# U-Net (Ronneberger et al. 2015) with BN after every bias-free 3x3 convolution, 3 -> 1 channel.
UNET_ENCODER = (
    convbn(3, 3, 64)
    + convbn(3, 64, 64)
    + convbn(3, 64, 128)
    + convbn(3, 128, 128)
    + convbn(3, 128, 256)
    + convbn(3, 256, 256)
    + convbn(3, 256, 512)
    + convbn(3, 512, 512)
)
UNET_BILINEAR = (
    UNET_ENCODER
    + convbn(3, 512, 512)
    + convbn(3, 512, 512)  # bottleneck 1024 // 2 (milesial's factor 2)
    + convbn(3, 1024, 512)
    + convbn(3, 512, 256)  # cat(512 skip, 512 up) -> mid 512 -> 256
    + convbn(3, 512, 256)
    + convbn(3, 256, 128)
    + convbn(3, 256, 128)
    + convbn(3, 128, 64)
    + convbn(3, 128, 64)
    + convbn(3, 64, 64)
    + conv(1, 64, 1)  # 1x1 classifier
)
UNET_TRANSPOSED = (
    UNET_ENCODER
    + convbn(3, 512, 1024)
    + convbn(3, 1024, 1024)  # bottleneck
    + conv(2, 1024, 512)
    + convbn(3, 1024, 512)
    + convbn(3, 512, 512)  # 2x2 up-conv, unit
    + conv(2, 512, 256)
    + convbn(3, 512, 256)
    + convbn(3, 256, 256)
    + conv(2, 256, 128)
    + convbn(3, 256, 128)
    + convbn(3, 128, 128)
    + conv(2, 128, 64)
    + convbn(3, 128, 64)
    + convbn(3, 64, 64)
    + conv(1, 64, 1)
)
# The original network (1 input channel, 2 classes, biases, no BN) has 31,030,658 parameters.
assert UNET_TRANSPOSED - 2 * 9 * 64 + 65 - 5888 == 31_030_658


# Oktay et al. 2018 additive gate on a skip with c channels gated by c channels (bilinear U-Net):
# W_x 2x2 stride 2 without bias, W_g 1x1, psi 1x1 -> 1, output 1x1 + BN; F_int = c / 2.
def attention_gate(c: int, g: int) -> int:
    f = c // 2
    return conv(2, c, f, bias=False) + conv(1, g, f) + conv(1, f, 1) + conv(1, c, c) + 2 * c


ATTENTION_UNET = UNET_BILINEAR + sum(attention_gate(c, c) for c in (512, 256, 128, 64))

# SegNet (Badrinarayanan et al. 2017): VGG16-BN encoder (biases kept) and its mirror image; the
# last decoder convolution maps 64 channels to the classes, without BN.
SEGNET_ENCODER = sum(conv(3, i, o) + 2 * o for i, o in VGG16)


def segnet_params(classes: int) -> int:
    decoder = sum(conv(3, o, i) + 2 * i for i, o in VGG16[1:]) + conv(3, 64, classes)
    return SEGNET_ENCODER + decoder


# FCN-8s (Long et al. 2015): VGG16 convolutions, fc6 (7x7, 4096), fc7 (1x1, 4096), score_fr,
# score_pool4, score_pool3 (1x1), upscore2 and upscore_pool4 (4x4) and upscore8 (16x16) without
# bias. The paper's Table 1 gives "134M" for FCN-VGG16.
def fcn8s_params(classes: int) -> int:
    heads = conv(1, 4096, classes) + conv(1, 512, classes) + conv(1, 256, classes)
    ups = 2 * conv(4, classes, classes, bias=False) + conv(16, classes, classes, bias=False)
    return VGG16_CONVS + conv(7, 512, 4096) + conv(1, 4096, 4096) + heads + ups


# PSPNet (Zhao et al. 2017): pyramid levels 1x1 conv 2048 -> 512 + BN (x4), 3x3 conv
# 4096 -> 512 + BN, 1x1 classifier.
def pspnet_params(classes: int, depth: int = 50) -> int:
    head = 4 * convbn(1, 2048, 512) + convbn(3, 4096, 512) + conv(1, 512, classes)
    return resnet_params(depth) + head


# DeepLabv3 (Chen et al. 2017): ASPP 1x1 + three 3x3 atrous + image pooling 1x1 (256 each, BN),
# 1x1 fusion 1280 -> 256 + BN, 1x1 classifier.
def deeplabv3_params(classes: int, depth: int = 50) -> int:
    aspp = 2 * convbn(1, 2048, 256) + 3 * convbn(3, 2048, 256) + convbn(1, 1280, 256)
    return resnet_params(depth) + aspp + conv(1, 256, classes)


# torchvision's deeplabv3_resnet50 (42,004,074 with 21 classes) adds an auxiliary FCN head and a
# 3x3 convolution after ASPP, neither of which is in the paper.
TV_AUX = convbn(3, 1024, 256) + conv(1, 256, 21)
TV_HEAD_3X3 = convbn(3, 256, 256)
assert deeplabv3_params(21) == 42_004_074 - TV_AUX - TV_HEAD_3X3
assert deeplabv3_params(21, 101) == 60_996_202 - TV_AUX - TV_HEAD_3X3  # deeplabv3_resnet101

PAPER_COUNTS = [
    ("unet", dict(in_channels=3), UNET_BILINEAR, 17_262_977),
    ("unet", dict(in_channels=3, upsampling="transposed"), UNET_TRANSPOSED, 31_037_633),
    ("attention_unet", dict(in_channels=3), ATTENTION_UNET, 18_485_381),
    ("segnet", dict(in_channels=3), segnet_params(1), 29_443_585),
    ("segnet", dict(in_channels=3, num_classes=11), segnet_params(11), 29_449_355),
    ("fcn", dict(in_channels=3, num_classes=21), fcn8s_params(21), 134_489_759),
    ("pspnet", dict(in_channels=3, num_classes=21), pspnet_params(21), 46_592_597),
    ("deeplabv3", dict(in_channels=3, num_classes=21), deeplabv3_params(21), 39_048_533),
    ("deeplabv3", dict(in_channels=3, depth=101), deeplabv3_params(1, 101), 58_035_521),
]


@pytest.mark.parametrize(("name", "kwargs", "derived", "total"), PAPER_COUNTS)
def test_parameter_count_at_paper_width(name, kwargs, derived, total):
    assert derived == total
    abstract = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **kwargs))
    assert models.count_params(abstract) == total
    if name == "fcn":
        assert round(total / 1e6) == 134  # Long et al., Table 1


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_resnet_backbone_count_matches_torchvision(depth):
    assert resnet_params(depth) == TORCHVISION_RESNET[depth]
    abstract = nnx.eval_shape(lambda: models.ResNet(3, depth=depth, rngs=nnx.Rngs(0)))
    assert models.count_params(abstract) == TORCHVISION_RESNET[depth]


# --------------------------------------------------------------------------------------------
# Per-model behaviour on tiny configurations.


@pytest.mark.parametrize("name", list(TINY))
def test_train_step_shapes_gradients_and_batch_stats(name):
    model = tiny(name)
    _, size, _ = TINY[name]
    model.train()
    graphdef, state = nnx.split(model)
    x = inputs(size)
    labels = (x[..., :1] > 1.0).astype(jnp.float32)

    @jit
    def step(state, x, labels):
        model = nnx.merge(graphdef, state)

        def loss_fn(model):
            logits = model(x)
            bce = jax.nn.softplus(logits) - logits * labels  # sigmoid cross-entropy
            return jnp.mean(bce), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        return loss, logits, grads, nnx.state(model)

    loss, logits, grads, new_state = step(state, x, labels)
    assert logits.shape == (BATCH, *size, 1) and logits.dtype == jnp.float32
    assert np.isfinite(float(loss))
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == len(jax.tree.leaves(nnx.filter_state(state, nnx.Param))) > 0
    for leaf in leaves:
        assert np.all(np.isfinite(leaf))
    # every parameter takes part in the forward pass
    assert all(np.abs(np.asarray(leaf)).max() > 0 for leaf in leaves)
    before, after = batch_stats(state), batch_stats(new_state)
    assert len(after) == len(before) > 0
    assert all(not np.allclose(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("name", list(TINY))
def test_eval_forward_one_trace_per_shape_and_frozen_stats(name):
    model = tiny(name)
    _, _, size = TINY[name]
    model.eval()
    graphdef, state = nnx.split(model)
    chex.clear_trace_counter()

    @jit
    @chex.assert_max_traces(n=1)
    def forward(state, x):
        model = nnx.merge(graphdef, state)
        return model(x), nnx.state(model)

    first, new_state = forward(state, inputs(size, seed=1))
    second, _ = forward(state, inputs(size, seed=1))  # same shape: no second trace
    assert first.shape == (BATCH, *size, 1) and first.dtype == jnp.float32
    np.testing.assert_array_equal(first, second)  # eval mode: no dropout
    for a, b in zip(batch_stats(new_state), batch_stats(state), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(TINY))
def test_mc_dropout_passes_differ_and_leave_model_untouched(name):
    model = tiny(name)
    _, size, _ = TINY[name]
    model.train()
    graphdef, state = nnx.split(model)

    @jit
    def mc(state, x, key):
        model = nnx.merge(graphdef, state)
        out = models.mc_dropout_logits(model, x, num_samples=3, rngs_or_key=key)
        return out, nnx.state(model)

    out, new_state = mc(state, inputs(size), jax.random.key(3))
    assert out.shape == (3, BATCH, *size, 1) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    assert not np.allclose(out[0], out[1]) and not np.allclose(out[1], out[2])
    np.testing.assert_array_equal(out, mc(state, inputs(size), jax.random.key(3))[0])
    for a, b in zip(batch_stats(new_state), batch_stats(state), strict=True):
        np.testing.assert_array_equal(a, b)  # BN ran on its running averages
    bns = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
    assert not any(bn.use_running_average for bn in bns)  # the model is still in train mode


def small_unet(**config) -> nnx.Module:
    """A one-stage U-Net built with its real initialisers (few shapes: cheap eagerly)."""
    return models.create("unet", in_channels=3, width=4, num_stages=1, rngs=nnx.Rngs(0), **config)


def test_mc_dropout_without_dropout_repeats_the_eval_forward():
    model = small_unet()
    graphdef, state = nnx.split(model)
    x = inputs((8, 8))
    rngs = nnx.Rngs(dropout=5)  # an nnx.Rngs is accepted too
    mc = jit(
        lambda state, x, key: models.mc_dropout_logits(
            nnx.merge(graphdef, state), x, num_samples=2, rngs_or_key=key
        )
    )
    out = mc(state, x, rngs.dropout())
    assert out.shape == (2, BATCH, 8, 8, 1)
    np.testing.assert_array_equal(out[0], out[1])
    model.eval()
    eval_graphdef, eval_state = nnx.split(model)
    expected = jit(lambda state, x: nnx.merge(eval_graphdef, state)(x))(eval_state, x)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-5)  # BN on running stats
    with pytest.raises(ValueError, match="num_samples"):
        models.mc_dropout_logits(model, x, num_samples=0, rngs_or_key=jax.random.key(0))
    with pytest.raises(ValueError, match="rngs_or_key"):
        models.mc_dropout_logits(model, x, num_samples=2, rngs_or_key=1.5)


def test_mc_dropout_sequential_equals_vectorised():
    graphdef, state = nnx.split(small_unet(dropout_rate=0.5))
    x = inputs((8, 8))
    key = jax.random.PRNGKey(7)  # raw uint32 keys are accepted too

    @jit
    def both(state, x):
        model = nnx.merge(graphdef, state)
        vec = models.mc_dropout_logits(model, x, num_samples=3, rngs_or_key=key)
        seq = models.mc_dropout_logits(model, x, num_samples=3, rngs_or_key=key, sequential=True)
        return vec, seq

    vec, seq = both(state, x)
    np.testing.assert_allclose(vec, seq, rtol=1e-5, atol=1e-5)
    assert not np.allclose(vec[0], vec[1])


BAD_SIZES = {
    "unet": (40, "multiples of 16"),
    "segnet": (24, "at least 32"),
    "pspnet": (36, "multiples of 8"),
    "deeplabv3": (40, "multiples of 16"),
    "fcn": (48, "multiples of 32"),
    "attention_unet": (20, "multiples of 8"),
}


@pytest.mark.parametrize("name", list(TINY))
def test_bad_input_size_and_channels_raise(name):
    model = tiny(name)
    bad, allowed = BAD_SIZES[name]
    with pytest.raises(ValueError, match=allowed):
        model(jnp.zeros((1, bad, 64, 3)))
    with pytest.raises(ValueError, match="in_channels=3"):
        model(jnp.zeros((1, 64, 64, 1)))
    with pytest.raises(ValueError, match="NHWC"):
        model(jnp.zeros((64, 64, 3)))


@pytest.mark.parametrize("name", list(TINY))
def test_bfloat16_computation_float32_logits(name):
    cfg, size, _ = TINY[name]
    abstract = nnx.eval_shape(
        lambda: models.create(name, in_channels=3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), **cfg)
    )
    abstract.eval()
    graphdef, state = nnx.split(abstract)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.filter_state(state, nnx.Param)))
    x = jax.ShapeDtypeStruct((BATCH, *size, 3), jnp.float32)

    def features(state, x):
        return jax.tree.leaves(nnx.merge(graphdef, state).backbone(x))[-1]

    assert jax.eval_shape(features, state, x).dtype == jnp.bfloat16
    logits = jax.eval_shape(lambda state, x: nnx.merge(graphdef, state)(x), state, x)
    assert logits.dtype == jnp.float32 and logits.shape == (BATCH, *size, 1)


@pytest.mark.parametrize(
    ("name", "config", "size"),
    [
        ("unet", dict(upsampling="transposed"), (64, 48)),
        ("unet", dict(num_stages=5, align_corners=False), (64, 96)),
        ("segnet", dict(), (33, 47)),
        ("fcn", dict(variant="16s"), (64, 32)),
        ("fcn", dict(variant="32s"), (64, 32)),
        ("pspnet", dict(output_stride=16, bins=(1, 3)), (48, 32)),
        ("deeplabv3", dict(output_stride=8, depth=18), (40, 24)),
        ("deeplabv3", dict(atrous_rates=(2, 4)), (32, 64)),
        ("attention_unet", dict(), (32, 64)),
    ],
)
def test_other_configurations_trace_to_the_input_size(name, config, size):
    """Shapes of non-default configurations, by abstract evaluation (no compilation)."""
    config = {"width": 4, **({"depth": 10} if name in ("pspnet", "deeplabv3") else {}), **config}
    abstract = nnx.eval_shape(
        lambda: models.create(name, in_channels=2, num_classes=3, rngs=nnx.Rngs(0), **config)
    )
    graphdef, state = nnx.split(abstract)
    x = jax.ShapeDtypeStruct((1, *size, 2), jnp.float32)
    out = jax.eval_shape(lambda state, x: nnx.merge(graphdef, state)(x), state, x)
    assert out.shape == (1, *size, 3) and out.dtype == jnp.float32


# --------------------------------------------------------------------------------------------
# Registry and configuration errors.


def test_unknown_name_lists_models():
    with pytest.raises(ValueError, match="unet, segnet, pspnet, deeplabv3, fcn, attention_unet"):
        models.create("resunet", in_channels=3, rngs=nnx.Rngs(0))


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="'widht'.*accepted keys: width"):
        models.create("unet", in_channels=3, widht=8, rngs=nnx.Rngs(0))
    assert "depth" in models.config_keys("deeplabv3")
    assert "output_stride" in models.config_keys("pspnet")


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("unet", dict(width=0), "width"),
        ("unet", dict(upsampling="nearest"), "upsampling"),
        ("unet", dict(dropout_rate=1.0), "dropout_rate"),
        ("pspnet", dict(depth=42), "depth"),
        ("deeplabv3", dict(output_stride=32), "output_stride"),
        ("fcn", dict(variant="4s"), "variant"),
        ("segnet", dict(dtype="int32"), "dtype"),
    ],
)
def test_invalid_config_values(name, config, message):
    with pytest.raises(ValueError, match=message):
        nnx.eval_shape(lambda: models.create(name, in_channels=3, rngs=nnx.Rngs(0), **config))


# --------------------------------------------------------------------------------------------
# SegNet's pooling indices, resizing and pooling operations.


def numpy_max_pool_with_argmax(x: np.ndarray, k: int = 2):
    b, h, w, c = x.shape
    values = np.zeros((b, h // k, w // k, c), x.dtype)
    indices = np.zeros((b, h // k, w // k, c), np.int32)
    for n in range(b):
        for i in range(h // k):
            for j in range(w // k):
                for ch in range(c):
                    window = x[n, i * k : (i + 1) * k, j * k : (j + 1) * k, ch]
                    di, dj = np.unravel_index(np.argmax(window), window.shape)
                    values[n, i, j, ch] = window[di, dj]
                    indices[n, i, j, ch] = (i * k + di) * w + (j * k + dj)
    return values, indices


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 7, 9, 2)])
def test_max_pool_with_argmax_and_unpool_route_values_back(shape):
    x = np.asarray(jax.random.normal(jax.random.key(0), shape))
    size = shape[1:3]

    @jit
    def run(x, decoder):
        values, indices = ops.max_pool_with_argmax(x)
        unpooled = ops.max_unpool(values, indices, size)
        routed = ops.max_unpool(decoder, indices, size)
        grad_x = jax.grad(lambda x: ops.max_pool_with_argmax(x)[0].sum())(x)
        grad_v = jax.grad(lambda v: (ops.max_unpool(v, indices, size) * 2).sum())(values)
        return values, indices, unpooled, routed, grad_x, grad_v

    ref_values, ref_indices = numpy_max_pool_with_argmax(x)
    decoder = np.arange(ref_values.size, dtype=np.float32).reshape(ref_values.shape) + 1
    values, indices, unpooled, routed, grad_x, grad_v = map(np.asarray, run(x, decoder))
    np.testing.assert_array_equal(values, ref_values)
    np.testing.assert_array_equal(indices, ref_indices)

    # unpooling puts every max back at its argmax position and zeros elsewhere
    expected = np.zeros_like(x)
    for n in range(values.shape[0]):
        for ch in range(values.shape[3]):
            flat = expected[n, :, :, ch].reshape(-1)
            flat[ref_indices[n, :, :, ch].ravel()] = ref_values[n, :, :, ch].ravel()
            expected[n, :, :, ch] = flat.reshape(size)
    np.testing.assert_array_equal(unpooled, expected)
    assert np.count_nonzero(unpooled) == values.size

    # arbitrary decoder values are routed to the encoder's argmax positions
    rows, cols = ref_indices // size[1], ref_indices % size[1]
    bi, _, _, ci = np.indices(values.shape)
    np.testing.assert_array_equal(routed[bi, rows, cols, ci], decoder)
    assert np.count_nonzero(routed) == decoder.size

    # gradients flow only through the selected positions, in both directions
    np.testing.assert_array_equal(grad_x != 0, expected != 0)
    np.testing.assert_array_equal(grad_v, 2 * np.ones(values.shape))


@pytest.mark.parametrize("size", [(10, 14), (3, 4), (5, 7), (16, 9)])
def test_resize_bilinear_matches_jax_image_resize(size):
    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
    expected = jax.image.resize(x, (2, *size, 3), "bilinear", antialias=False)
    np.testing.assert_allclose(jit(lambda x: ops.resize_bilinear(x, size))(x), expected, atol=1e-5)


def test_resize_bilinear_align_corners_keeps_corners_and_is_linear():
    x = np.asarray(jax.random.normal(jax.random.key(1), (1, 4, 6, 2)))
    ramp = np.broadcast_to(np.arange(4.0, dtype=np.float32)[None, :, None, None], (1, 4, 3, 1))

    @jit
    def resize(x, ramp):
        return (
            ops.resize_bilinear(x, (7, 11), align_corners=True),
            ops.resize_bilinear(ramp, (7, 3), align_corners=True),
        )

    y, ramp_up = resize(x, ramp)
    for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        np.testing.assert_allclose(y[0, i, j], x[0, i, j], rtol=1e-6)
    np.testing.assert_allclose(ramp_up[0, :, 0, 0], np.linspace(0, 3, 7), rtol=1e-6)


def test_adaptive_avg_pool_matches_pytorch_bins():
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 7, 5, 3)))
    out = np.asarray(jit(lambda x: ops.adaptive_avg_pool(x, (3, 6)))(x))
    for i in range(3):
        for j in range(6):
            r0, r1 = (i * 7) // 3, -((-(i + 1) * 7) // 3)
            c0, c1 = (j * 5) // 6, -((-(j + 1) * 5) // 6)
            np.testing.assert_allclose(out[:, i, j], x[:, r0:r1, c0:c1].mean(axis=(1, 2)), 1e-5)


def test_fcn_upsampling_starts_as_bilinear_interpolation():
    from dibe_jax.models.blocks import bilinear_kernel_init, conv_transpose

    up = conv_transpose(
        2, 2, 16, 8, use_bias=False, kernel_init=bilinear_kernel_init, rngs=nnx.Rngs(0)
    )  # FCN-8s's upscore8
    out = up(jnp.ones((1, 4, 4, 2)))
    assert out.shape == (1, 32, 32, 2)
    np.testing.assert_allclose(out[0, 8:24, 8:24], 1.0, rtol=1e-6)  # constants stay constant
    ramp = jnp.broadcast_to(jnp.arange(4.0)[None, :, None, None], (1, 4, 4, 2))
    column = up(ramp)[0, 8:24, 12, 0]
    np.testing.assert_allclose(np.diff(column), 1 / 8, rtol=1e-5)  # linear in between


@pytest.mark.parametrize("shape", [(3, 3, 3, 4), (1, 1, 8, 1), (2, 2, 5, 3), (7, 6), (4, 4, 2, 2)])
@pytest.mark.parametrize(
    ("scale", "mode", "distribution"),
    [
        (2.0, "fan_out", "normal"),
        (1.0 / 3.0, "fan_in", "uniform"),
        (1.0 / 3.0, "fan_out", "uniform"),
    ],
)
def test_flat_drawn_initialisers_equal_jax_bit_for_bit(shape, scale, mode, distribution):
    """The kernels drawn as one flat vector (fast to compile on XLA:CPU) are JAX's own
    ``variance_scaling`` values exactly, and the PyTorch bias is ``jax.random.uniform``'s."""
    from dibe_jax.models import blocks

    key = jax.random.key(11)
    ours = blocks.variance_scaling(scale, mode, distribution)(key, shape)
    theirs = jax.nn.initializers.variance_scaling(scale, mode, distribution)(key, shape)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    bias = blocks.torch_bias_init(27)(key, shape[-1:])
    direct = jax.random.uniform(key, shape[-1:], jnp.float32, -(27**-0.5), 27**-0.5)
    np.testing.assert_array_equal(np.asarray(bias), np.asarray(direct))
    with pytest.raises(ValueError, match="mode"):
        blocks.variance_scaling(1.0, "fan_avg", "normal")


# --------------------------------------------------------------------------------------------
# Backbone checkpoints.


def test_backbone_checkpoint_npz_roundtrip_and_errors(tmp_path):
    source = small_unet()
    path = os.fspath(tmp_path / "encoder.npz")
    models.save_backbone(source.backbone, path)
    loaded = models.create(
        "unet", in_channels=3, width=4, num_stages=1, backbone_checkpoint=path, rngs=nnx.Rngs(2)
    )
    expected = models.backbone_arrays(source.backbone)
    got = models.backbone_arrays(loaded.backbone)
    assert expected.keys() == got.keys() and len(expected) > 0
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])

    def build(name, **config):
        return nnx.eval_shape(
            lambda: models.create(
                name, in_channels=3, backbone_checkpoint=path, rngs=nnx.Rngs(0), **config
            )
        )

    with pytest.raises(ValueError, match="encoder.npz.*shape mismatch"):
        build("unet", width=8, num_stages=1)
    with pytest.raises(ValueError, match="encoder.npz.*missing keys"):
        build("unet", width=4, num_stages=2)
    with pytest.raises(ValueError, match="encoder.npz.*unexpected keys"):
        build("segnet", width=4)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="garbage.npz"):
        models.load_backbone(loaded.backbone, garbage)
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        models.load_backbone(loaded.backbone, tmp_path / "nowhere.npz")


def test_backbone_checkpoint_orbax_directory(tmp_path):
    source = small_unet()
    path = tmp_path / "encoder_orbax"
    models.save_backbone(source.backbone, path)
    loaded = models.create(
        "unet",
        in_channels=3,
        width=4,
        num_stages=1,
        backbone_checkpoint=os.fspath(path),
        rngs=nnx.Rngs(2),
    )
    expected = models.backbone_arrays(source.backbone)
    got = models.backbone_arrays(loaded.backbone)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    with pytest.raises(ValueError, match="encoder_orbax.*shape mismatch"):
        nnx.eval_shape(
            lambda: models.create(
                "unet",
                in_channels=1,
                width=4,
                num_stages=1,
                backbone_checkpoint=path,
                rngs=nnx.Rngs(0),
            )
        )
