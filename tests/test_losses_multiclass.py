"""Multi-class losses (softmax CE / balanced CE / focal, Dice / Tversky / focal Tversky per class,
one-vs-rest DIBE) and the Lovász losses: hand values, a second formulation, identities,
gradients, masks, pooling, bad input and finiteness."""

from __future__ import annotations

import functools
import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from dibe_jax import losses
from dibe_jax.losses import _softmax, binary, multiclass

MC = [
    "softmax_cross_entropy",
    "balanced_cross_entropy",
    "softmax_focal",
    "dice_multiclass",
    "tversky_multiclass",
    "focal_tversky_multiclass",
    "dibe_dis_multiclass",
    "dibe_reg_multiclass",
    "dibe_multiclass",
]
C = 3

HYPER = {  # non-default values, so every hyperparameter is exercised
    "softmax_cross_entropy": {"class_weights": np.array([0.2, 1.0, 3.0])},
    "balanced_cross_entropy": {"pool_batch": False},
    "softmax_focal": {"class_weights": np.array([0.5, 1.0, 2.0]), "gamma": 1.5},
    "dice_multiclass": {"eps": 0.5, "class_weights": np.array([1.0, 2.0, 0.5])},
    "tversky_multiclass": {"alpha": 0.7, "beta": 0.2, "eps": 0.8, "include_background": False},
    "focal_tversky_multiclass": {"alpha": 0.4, "beta": 0.6, "gamma": 0.8, "classes": "all"},
    "dibe_dis_multiclass": {"lam": 0.35, "gamma": 1.7, "alpha": 0.6, "beta": 0.2},
    "dibe_reg_multiclass": {"alpha": 0.2, "beta": 0.8, "gamma": 1.3, "eps": 0.9},
    "dibe_multiclass": dict(
        theta=0.4, lam=0.3, gamma=1.6, alpha=0.7, beta=0.3, eps=1.0, class_weights=[0.5, 1, 1]
    ),
}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


SHAPE = (3, 6)  # one batch shape for (nearly) every test: compilations are shared


def _batch(seed, shape=SHAPE, c=C, scale=3.0):
    """Logits ``[*shape, c]``, labels ``[*shape]``; image 0 has no class 2, image 1 one class."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(*shape, c))
    y = rng.integers(0, c, size=shape)
    y[0] = np.where(y[0] == 2, 0, y[0])
    y[1] = 1
    return z, y


@functools.cache
def _value_and_grad_fn(name, statics):
    fn = losses.get(name)
    return jax.jit(
        jax.value_and_grad(lambda z, y, w, h: jnp.mean(fn(z, y, where=w, **dict(statics), **h)))
    )


def value_and_grad(name, z, y, where, **h):
    """Jitted value and gradient of the batch mean; one compilation per loss and shape."""
    statics = tuple(sorted((k, v) for k, v in h.items() if isinstance(v, bool | str)))
    traced = {k: jnp.asarray(v, jnp.float32) for k, v in h.items() if k not in dict(statics)}
    return _value_and_grad_fn(name, statics)(
        jnp.asarray(z), jnp.asarray(y), jnp.asarray(where, jnp.float32), traced
    )


def _finite(name, z, y, where, **h):
    val, grad = value_and_grad(name, z, y, where, **h)
    assert np.isfinite(float(val)), (name, h)
    assert np.all(np.isfinite(np.asarray(grad))), (name, h)


# ----------------------------------------------------------------------------------------
# A second formulation: float64 NumPy, class by class and pixel by pixel.


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _dibe_dis_pixel(p, y, hit, lam, g, a, b):  # Eq. 18 case by case (binary reference)
    if y and hit:
        return -lam * (1 - p) ** g * math.log(p)
    if y:
        return -lam * (1 - p ** (1 + a)) ** g * (1 + a) * math.log(p)
    if not hit:
        return -(1 - lam) * p**g * math.log(1 - p)
    return -(1 - lam) * (1 - (1 - p) ** (1 + b)) ** g * (1 + b) * math.log(1 - p)


def ref_image(name, z, y, **h):
    """One image: logits ``[P, C]``, labels ``[P]``."""
    p = _np_softmax(z)
    n, c = p.shape
    onehot = np.eye(c)[y]
    k = np.asarray(h.get("class_weights", np.ones(c)), float)
    if name == "softmax_cross_entropy":
        return np.mean([-k[y[i]] * math.log(p[i, y[i]]) for i in range(n)])
    if name == "balanced_cross_entropy":
        w = (n - onehot.sum(0)) / n
        return np.mean([-w[y[i]] * math.log(p[i, y[i]]) for i in range(n)])
    if name == "softmax_focal":
        g = h.get("gamma", 2.0)
        return np.mean([-k[y[i]] * (1 - p[i, y[i]]) ** g * math.log(p[i, y[i]]) for i in range(n)])
    tp = (p * onehot).sum(0)
    fn = ((1 - p) * onehot).sum(0)
    fp = (p * (1 - onehot)).sum(0)
    present = onehot.sum(0) > 0
    if not h.get("include_background", True):
        k = k.copy()
        k[0] = 0
    eps, a, b = h.get("eps", 1.0), h.get("alpha", 0.3), h.get("beta", 0.7)
    tv = (tp + eps) / (tp + a * fn + b * fp + eps)

    def macro(values, use_present):
        w = k * (present if use_present else 1)
        return float((w * values).sum() / w.sum()) if w.sum() > 0 else 0.0

    use_present = h.get("classes", "present") == "present"
    if name == "dice_multiclass":
        return macro(1 - (2 * tp + eps) / (2 * tp + fp + fn + eps), use_present)
    if name == "tversky_multiclass":
        return macro(1 - tv, use_present)
    if name == "focal_tversky_multiclass":
        return macro((1 - tv) ** (1 / h.get("gamma", 0.75)), use_present)
    lam, g = h.get("lam", 0.25), h.get("gamma", 2.0 if name != "dibe_reg_multiclass" else 1.5)
    top = p.argmax(-1)
    dis = np.zeros(c)
    for j in range(c):
        pixels = [_dibe_dis_pixel(p[i, j], y[i] == j, top[i] == j, lam, g, a, b) for i in range(n)]
        dis[j] = np.mean(pixels)
    reg = (-np.log(tv)) ** (1 / g)
    if name == "dibe_dis_multiclass":
        return macro(dis, False)
    if name == "dibe_reg_multiclass":
        return macro(reg, False)
    th = h.get("theta", 0.5)
    return th * macro(dis, False) + (1 - th) * macro(reg, False)


@pytest.mark.parametrize("name", MC)
def test_matches_reference_and_check_grads_float64(name, x64):
    """Second formulation (NumPy, class by class) and ``check_grads`` on the same compilation.

    Forward mode suffices: reverse mode is JAX's transpose of the same linear map (no custom
    rules here), and the float32 tests below take reverse-mode gradients everywhere.
    """
    z, y = _batch(0)
    h = HYPER[name]
    fn = losses.get(name)
    got = np.asarray(fn(jnp.asarray(z), jnp.asarray(y), **h))
    want = [ref_image(name, z[i], y[i], **h) for i in range(3)]
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    yj = jnp.asarray(y)
    fwd = functools.partial(check_grads, order=1, modes=("fwd",))
    if name == "dibe_multiclass":  # also the gradient with respect to a hyperparameter
        logits_and_alpha = (jnp.asarray(z), jnp.asarray(0.7))
        fwd(lambda v, a: jnp.mean(fn(v, yj, **(h | {"alpha": a}))), logits_and_alpha)
    else:
        fwd(lambda v: jnp.mean(fn(v, yj, **h)), (jnp.asarray(z),))


# ------------------------------------------------------------------- hand-computed values


def test_hand_values():
    close = functools.partial(np.testing.assert_allclose, rtol=1e-6)
    uniform = jnp.zeros((1, 2, 4))  # p = 1/4 everywhere
    y = jnp.array([[0, 3]])
    np.testing.assert_allclose(losses.softmax_cross_entropy(uniform, y), [math.log(4)], rtol=1e-6)
    w = jnp.array([1.0, 1.0, 1.0, 3.0])  # pixel mean of (1, 3) · log 4
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(uniform, y, class_weights=w), [2 * math.log(4)], rtol=1e-6
    )
    # focal at p = 1/4, γ = 2: (3/4)^2 log 4
    np.testing.assert_allclose(losses.softmax_focal(uniform, y), [0.5625 * math.log(4)], rtol=1e-6)
    # balanced CE, 3 pixels of class 0 and 1 of class 1 at p = 1/2: w = (1/4, 3/4)
    z2, y2 = jnp.zeros((1, 4, 2)), jnp.array([[0, 0, 0, 1]])
    want = (3 * 0.25 + 0.75) * math.log(2) / 4
    np.testing.assert_allclose(losses.balanced_cross_entropy(z2, y2), [want], rtol=1e-6)
    # hard predictions (logits ±100): labels [0, 0, 1, 1, 2], predicted [0, 1, 1, 2, 2]
    pred = np.array([0, 1, 1, 2, 2])
    zh = jnp.asarray(np.where(np.eye(3)[pred] > 0, 100.0, -100.0)[None])
    yh = jnp.array([[0, 0, 1, 1, 2]])
    # per class (TP, FP, FN): 0 (1, 0, 1), 1 (1, 1, 1), 2 (1, 1, 0); Dice_c = 2TP/(2TP+FP+FN)
    dice = [1 - 2 / 3, 1 - 2 / 4, 1 - 2 / 3]
    close(losses.dice_multiclass(zh, yh, eps=0.0), [np.mean(dice)])
    close(losses.dice_multiclass(zh, yh, eps=0.0, include_background=False), [np.mean(dice[1:])])
    # Tversky α = 1 (misses), β = 0: 1 - TP/(TP + FN) = 1 - recall: (1/2, 1/2, 0)
    close(losses.tversky_multiclass(zh, yh, alpha=1.0, beta=0.0, eps=0.0), [1 / 3])
    # focal Tversky γ = 1/2 squares each class term: (1/4 + 1/4 + 0) / 3
    misses_only = {"alpha": 1.0, "beta": 0.0, "eps": 0.0}
    close(losses.focal_tversky_multiclass(zh, yh, gamma=0.5, **misses_only), [1 / 6])
    # DIBE_Reg one-vs-rest, γ = 1, α = 0, β = 1, ε = 0: log(1 + FP/TP) = (0, log 2, log 2)
    alarms_only = {"alpha": 0.0, "beta": 1.0, "eps": 0.0}
    close(losses.dibe_reg_multiclass(zh, yh, gamma=1.0, **alarms_only), [2 * math.log(2) / 3])
    # DIBE_Dis one-vs-rest at p = 1/2 (C = 2, zero logits, argmax = class 0), λ = 1/2, γ = 0:
    # class 1's pixel is a miss, weight (1 + α); class 0's pixel is a hit -> ((1 + α) + 1)/2 · ½ln2
    z1, y1 = jnp.zeros((1, 1, 2)), jnp.array([[1]])
    d = losses.dibe_dis_multiclass(z1, y1, lam=0.5, gamma=0.0, alpha=0.4, beta=0.0)
    close(d, [(1.4 + 1) / 2 * 0.5 * math.log(2)])


# ----------------------------------------------------------------------------- identities


def _close(a, b, rtol=2e-5, atol=1e-6):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_identities():
    z, y = _batch(1)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    ce = losses.softmax_cross_entropy(z, y)
    _close(losses.softmax_cross_entropy(z, jax.nn.one_hot(y, C)), ce)  # one-hot = class ids
    _close(losses.softmax_focal(z, y, gamma=0.0), ce)
    k = jnp.array([0.3, 1.0, 2.0])
    _close(
        losses.softmax_focal(z, y, class_weights=k, gamma=0.0),
        losses.softmax_cross_entropy(z, y, class_weights=k),
    )
    kw = {"include_background": False, "classes": "all"}
    _close(
        losses.tversky_multiclass(z, y, alpha=0.5, beta=0.5, eps=0.5, **kw),
        losses.dice_multiclass(z, y, eps=1.0, **kw),
    )
    _close(losses.focal_tversky_multiclass(z, y, gamma=1.0), losses.tversky_multiclass(z, y))
    _close(losses.dibe_multiclass(z, y, theta=1.0), losses.dibe_dis_multiclass(z, y))
    _close(losses.dibe_multiclass(z, y, theta=0.0, gamma=1.5), losses.dibe_reg_multiclass(z, y))
    # balanced CE on a batch with every class equally frequent is (1 - 1/C) · CE
    yb = jnp.asarray(np.arange(18).reshape(SHAPE) % C)
    _close(losses.balanced_cross_entropy(z, yb), (1 - 1 / C) * losses.softmax_cross_entropy(z, yb))


def test_binary_dibe_wrappers_dispatch_multiclass_input():
    """``dibe`` / ``dibe_dis`` / ``dibe_reg`` take ``[B, *spatial, C]`` logits with class ids."""
    z, y = _batch(1)
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    _close(losses.dibe(z, y), losses.dibe_multiclass(z, y))
    _close(losses.dibe(z, y, theta=1.0), losses.dibe_dis(z, y))
    _close(losses.dibe_dis(z, y), losses.dibe_dis_multiclass(z, y))
    _close(losses.dibe_reg(z, y), losses.dibe_reg_multiclass(z, y))
    with pytest.raises(ValueError, match="`labels`.*\\[0, 3\\)"):
        losses.dibe(z, y.at[0, 0].set(3))
    with pytest.raises(ValueError, match="`labels`.*integer"):
        losses.dibe_reg(z, y.astype(jnp.float32))
    # binary input is untouched: [B, *spatial, 1] logits still need labels of their shape
    with pytest.raises(ValueError, match="`labels` must have the shape of `logits`"):
        losses.dibe(z[..., :1], y)
    # the routing is the package's (losses._routing): binary.dibe takes sigmoid logits only
    with pytest.raises(ValueError, match="`labels` must have the shape of `logits`"):
        binary.dibe(z, y)


def test_two_classes_reduce_to_the_binary_losses():
    """C = 2, one-vs-rest: class 1 is the binary loss of z1 - z0; class 0 the mirrored one."""
    z, y = _batch(2, c=2)  # random logits: no ties z1 = z0, where argmax and ŷ = [z >= 0] differ
    z, y = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    d, yf = z[..., 1] - z[..., 0], y.astype(jnp.float32)
    fn, ref = losses.dibe_multiclass, losses.dibe
    _close(fn(z, y, include_background=False), ref(d, yf))
    _close(fn(z, y), (ref(d, yf) + ref(-d, 1 - yf)) / 2)
    _close(losses.softmax_cross_entropy(z, y), losses.bce(d, yf))


def test_log1m_softmax_is_accurate_at_saturation(x64):
    z = np.array([[100.0, -100.0, 0.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    got, top = jax.jit(lambda v: _softmax.log1m_softmax(jax.nn.log_softmax(v)))(
        jnp.asarray(z, jnp.float32)
    )
    p = _np_softmax(z)
    want = np.log([p[0, 1] + p[0, 2], 1 - p[0, 1], 1 - p[0, 2]])
    np.testing.assert_allclose(got[0], want, rtol=1e-5)
    np.testing.assert_allclose(got[1:], np.log1p(-p[1:]), rtol=1e-5)
    assert top.tolist() == [[True, False, False]] * 3


# ------------------------------------------------------------------------------ gradients


def test_vmap_over_alpha_and_single_compile():
    z, y = _batch(0)
    z = jnp.asarray(z, jnp.float32)
    h = {k: v for k, v in HYPER["tversky_multiclass"].items() if k != "alpha"}
    alphas = jnp.array([0.1, 0.5, 0.9])
    swept = jax.vmap(lambda a: losses.tversky_multiclass(z, y, alpha=a, **h))(alphas)
    single = jnp.stack([losses.tversky_multiclass(z, y, alpha=float(a), **h) for a in alphas])
    np.testing.assert_allclose(swept, single, rtol=1e-6)
    before = multiclass._tversky_mc._cache_size()
    for a in (0.15, 0.25):
        losses.tversky_multiclass(z, y, alpha=a, **h)
    assert multiclass._tversky_mc._cache_size() == before  # traced, not static


def test_alpha_weights_misses_of_each_class():
    # class 1 is missed on two pixels (predicted 0), nothing is a false alarm of class 1
    z = jnp.array([[[2.0, -1.0, -2.0], [1.0, 0.0, -1.0], [0.0, 3.0, -2.0], [-1.0, -1.0, 3.0]]])
    y = jnp.array([[1, 1, 1, 2]])
    lo = losses.dibe_multiclass(z, y, alpha=0.2, include_background=False)
    hi = losses.dibe_multiclass(z, y, alpha=0.8, include_background=False)
    assert float(hi[0]) > float(lo[0])


# --------------------------------------------------------- masks, pooling, jit, dtypes


@pytest.mark.parametrize("name", MC)
def test_where_drops_pixels_and_jit_agrees(name):
    z, y = _batch(5)
    z = z.astype(np.float32)
    h = HYPER[name]
    mask = np.ones(SHAPE, np.float32)
    mask[:, 4:] = 0
    garbage = z.copy()
    garbage[:, 4:] = 50.0 * np.sign(garbage[:, 4:])  # masked pixels must not matter
    val, grad = value_and_grad(name, garbage, y, mask, **h)
    jitted = val
    with jax.enable_x64(True):
        want = np.mean([ref_image(name, z[i, :4].astype(float), y[i, :4], **h) for i in range(3)])
    np.testing.assert_allclose(val, want, rtol=2e-5, atol=1e-6)
    assert np.all(np.asarray(grad)[:, 4:] == 0)
    val, grad = value_and_grad(name, z, y, 0 * mask, **h)  # fully masked
    assert float(val) == 0.0 and np.all(np.asarray(grad) == 0)
    # jit and no-jit agree: the jitted value above against an op-by-op run
    with jax.disable_jit():
        eager = jnp.mean(losses.get(name)(garbage, y, where=mask, **h))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["dice_multiclass", "dibe_multiclass"])
def test_pool_batch_and_axis_name(name):
    z, y = _batch(6)
    z = z.astype(np.float32)
    fn, h = losses.get(name), HYPER[name]
    with jax.enable_x64(True):  # NumPy reference: one image holding every pixel of the batch
        whole = ref_image(name, z.reshape(-1, C).astype(float), y.ravel(), **h)
        if name == "dibe_multiclass":  # only the region term pools; the pixel term stays per image
            th = h["theta"]
            region = ref_image(
                name, z.reshape(-1, C).astype(float), y.ravel(), **{**h, "theta": 0.0}
            )
            pixel = [
                ref_image(name, z[i].astype(float), y[i], **{**h, "theta": 1.0}) for i in range(3)
            ]
            whole = th * np.array(pixel) + (1 - th) * region
    want = np.broadcast_to(whole, (3,))
    np.testing.assert_allclose(fn(z, y, pool_batch=True, **h), want, rtol=1e-5)
    per_device = jax.vmap(lambda a, b: fn(a, b, axis_name="d", **h), axis_name="d")
    out = per_device(z[:, None], y[:, None])  # three "devices" of one image each
    np.testing.assert_allclose(out.reshape(-1), want, rtol=1e-5)


def test_balanced_cross_entropy_counts_the_batch():
    z, y = _batch(12, shape=(4, 6))
    z = z.astype(np.float32)
    fn = losses.balanced_cross_entropy
    n_c = np.bincount(y.ravel(), minlength=C)
    w = (y.size - n_c) / y.size  # batch weights, CDFL Eq. 2
    weighted = losses.softmax_cross_entropy(z, y, class_weights=w)
    np.testing.assert_allclose(fn(z, y), weighted, rtol=1e-5)
    per_device = jax.vmap(lambda a, b: fn(a, b, axis_name="d"), axis_name="d")
    out = per_device(z.reshape(2, 2, 6, C), y.reshape(2, 2, 6))
    np.testing.assert_allclose(out.reshape(-1), weighted, rtol=1e-5)
    assert not np.allclose(fn(z, y, pool_batch=False), weighted)


@pytest.mark.parametrize("name", ["softmax_focal", "dibe_multiclass"])
def test_bfloat16_logits(name):
    z, y = _batch(7)
    h, ones = HYPER[name], np.ones(SHAPE)
    zb = jnp.asarray(z, jnp.bfloat16)
    val, g = value_and_grad(name, zb, y, ones, **h)
    assert val.dtype == jnp.float32
    val32, _ = value_and_grad(name, zb.astype(jnp.float32), y, ones, **h)
    np.testing.assert_allclose(val, val32, rtol=1e-6)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


# ------------------------------------------------------------------- numerical safety


@settings(max_examples=10, deadline=None)
@given(
    z=hnp.arrays(np.float32, (*SHAPE, C), elements=st.floats(-100, 100, width=32)),
    y=hnp.arrays(np.int32, SHAPE, elements=st.integers(0, C - 1)),
    case=st.sampled_from(["any", "one_class", "masked"]),
)
def test_finite_for_any_logits(z, y, case):
    mask = np.zeros(SHAPE) if case == "masked" else np.ones(SHAPE)
    if case == "one_class":
        y = np.full_like(y, 2)
    for name in [*MC, "lovasz_softmax"]:
        _finite(name, z, y, mask, **HYPER.get(name, {}))
    _finite("lovasz_hinge", z[..., 0], (y == 1).astype(np.float32), mask)


def test_finite_at_perfect_and_saturated_predictions():
    y = np.array([[0, 1, 2, 2, 0, 0], [1] * 6, [0, 1, 1, 1, 1, 1]])
    onehot = np.eye(C)[y]
    ones = np.ones(SHAPE)
    for z in (np.where(onehot > 0, 100.0, -100.0), np.where(onehot > 0, -100.0, 100.0), 0 * onehot):
        for name in MC:
            h = dict(HYPER[name])
            for gamma in (0.5, 4.0) if "gamma" in h else (None,):
                if gamma is not None:
                    h["gamma"] = gamma
                _finite(name, z.astype(np.float32), y, ones, **h)
                if "eps" in h:
                    _finite(name, z.astype(np.float32), y, ones, **{**h, "eps": 0.0})


# ------------------------------------------------------------------------- bad input


def test_bad_input():
    z, y = jnp.zeros((2, 4, 3)), jnp.zeros((2, 4), jnp.int32)
    with pytest.raises(ValueError, match="`labels`.*\\[0, 3\\).*\\[0, 3\\]"):
        losses.softmax_cross_entropy(z, np.array([[0, 1, 2, 3], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="`labels`.*\\[-1, 2\\]"):
        losses.dice_multiclass(z, jnp.array([[0, 1, 2, -1], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="`labels`.*\\[0, 9\\]"):  # closed over inside a trace
        jax.grad(lambda v: losses.dibe_multiclass(v, y.at[0, 0].set(9)).sum())(z)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        losses.softmax_focal(z, y[:, :3])
    with pytest.raises(ValueError, match="`labels`.*integer"):
        losses.tversky_multiclass(z, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="`logits`.*rank"):
        losses.dibe_multiclass(jnp.zeros(3), jnp.zeros((), jnp.int32))
    with pytest.raises(ValueError, match="`logits`.*at least 2 classes"):
        losses.dice_multiclass(jnp.zeros((2, 4, 1)), y)
    with pytest.raises(ValueError, match="`logits`.*floating"):
        losses.softmax_cross_entropy(jnp.zeros((2, 4, 3), jnp.int32), y)
    with pytest.raises(ValueError, match="`where`"):
        losses.softmax_cross_entropy(z, y, where=jnp.ones((2, 4, 3)))
    with pytest.raises(ValueError, match="`class_weights`.*\\(3,\\)"):
        losses.dice_multiclass(z, y, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="`class_weights`.*>= 0"):
        losses.softmax_cross_entropy(z, y, class_weights=[1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="`classes`"):
        losses.dice_multiclass(z, y, classes="some")
    with pytest.raises(ValueError, match="`include_background`"):
        losses.dibe_multiclass(z, y, include_background=0)
    with pytest.raises(ValueError, match="`gamma`"):
        losses.focal_tversky_multiclass(z, y, gamma=0.0)
    with pytest.raises(ValueError, match="`class_weights`"):
        losses.softmax_focal(z, y, class_weights=-1.0)
    with pytest.raises(ValueError, match="`class_weights`.*\\(3,\\)"):
        losses.softmax_focal(z, y, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="`lam`"):
        losses.dibe_multiclass(z, y, lam=1.5)
    with pytest.raises(ValueError, match="`pool_batch`"):
        losses.dice_multiclass(z, y, pool_batch=1)
    # inside jit labels are not inspected: an out-of-range id just counts nowhere
    out = jax.jit(lambda a, b: losses.softmax_cross_entropy(a, b))(z, y.at[0, 0].set(7))
    assert np.all(np.isfinite(np.asarray(out)))


def test_registry_lists_hyperparameters():
    assert losses.hyperparameters("dice_multiclass") == dict(
        eps=1.0, include_background=True, class_weights=None, classes="present"
    )
    assert losses.hyperparameters("softmax_focal") == {"class_weights": None, "gamma": 2.0}
    assert losses.hyperparameters("balanced_cross_entropy") == {}
    for name in [*MC, "lovasz_hinge", "lovasz_softmax"]:
        assert name in losses.names() and losses.describe(name)


# ---------------------------------------------------------------------------------- Lovász


def _jaccard_loss(pred, true):
    union = np.sum(pred | true)
    return 1 - np.sum(pred & true) / union if union else 0.0


def _lovasz_by_sets(errors, gt):
    """The Lovász extension from its definition: Δ_J of the growing top-k sets of errors."""
    order = np.argsort(-errors, kind="stable")
    fg = {int(i) for i in np.flatnonzero(gt)}

    def delta(m):  # Jaccard loss of the mispredicted set m
        return len(m) / len(fg | m) if m else 0.0

    total, prev, chosen = 0.0, 0.0, set()
    for i in order:
        chosen.add(int(i))
        cur = delta(chosen)
        total += errors[i] * (cur - prev)
        prev = cur
    return total


def test_lovasz_equals_jaccard_at_binary_predictions():
    rng = np.random.default_rng(8)
    for _ in range(4):
        y = rng.integers(0, 2, size=SHAPE)
        pred = rng.integers(0, 2, size=SHAPE)
        z = np.where(pred > 0, 1.0, -1.0).astype(np.float32)  # hinge errors 0 or 2
        want = [2 * _jaccard_loss(pred[i] > 0, y[i] > 0) for i in range(3)]
        np.testing.assert_allclose(losses.lovasz_hinge(z, y), want, rtol=1e-6)
        yc = rng.integers(0, C, size=SHAPE)
        pc = rng.integers(0, C, size=SHAPE)
        zc = np.where(np.eye(C)[pc] > 0, 60.0, -60.0).astype(np.float32)
        per = [[_jaccard_loss(pc[i] == c, yc[i] == c) for c in range(C)] for i in range(3)]
        want = [np.mean([v for c, v in enumerate(per[i]) if (yc[i] == c).any()]) for i in range(3)]
        np.testing.assert_allclose(losses.lovasz_softmax(zc, yc), want, rtol=1e-6, atol=1e-7)
        got = losses.lovasz_softmax(zc, yc, classes="all")
        np.testing.assert_allclose(got, np.mean(per, axis=1), rtol=1e-6, atol=1e-7)


def test_lovasz_matches_set_definition_and_gradients(x64):
    z, y = _batch(9)
    yb = (y == 1).astype(np.float64)
    errors = np.maximum(0, 1 - z[..., 0] * (2 * yb - 1))
    want = [_lovasz_by_sets(errors[i], yb[i]) for i in range(3)]
    np.testing.assert_allclose(losses.lovasz_hinge(z[..., 0], yb), want, rtol=1e-10)
    pooled = _lovasz_by_sets(errors.ravel(), yb.ravel())  # one sort over the batch
    np.testing.assert_allclose(losses.lovasz_hinge(z[..., 0], yb, pool_batch=True), [pooled] * 3)
    p = _np_softmax(z)
    want = []
    for i in range(3):
        per = [_lovasz_by_sets(np.abs((y[i] == c) - p[i, :, c]), y[i] == c) for c in range(C)]
        want.append(np.mean([per[c] for c in range(C) if (y[i] == c).any()]))
    np.testing.assert_allclose(losses.lovasz_softmax(z, y), want, rtol=1e-10)
    # piecewise linear: the gradient is exact away from ties
    fwd = functools.partial(check_grads, order=1, modes=("fwd",), eps=1e-6)
    fwd(lambda v: jnp.mean(losses.lovasz_hinge(v, yb)), (jnp.asarray(z[..., 0]),))
    fwd(lambda v: jnp.mean(losses.lovasz_softmax(v, y)), (jnp.asarray(z),))


@pytest.mark.parametrize("name", ["lovasz_hinge", "lovasz_softmax"])
def test_lovasz_edge_cases_and_jit(name):
    z = (np.random.default_rng(10).normal(size=SHAPE) * 5).astype(np.float32)
    background = np.zeros(SHAPE, np.int32)
    if name == "lovasz_softmax":
        z = np.stack([z, -z], -1)
        errors = 1 - _np_softmax(z.astype(float))[..., 0]  # only class 0 is present
    else:  # all background: s = -1, hinge errors 1 + z, and the loss is the largest one
        errors = np.maximum(0, 1 + z.astype(float))
    fn = losses.get(name)
    _finite(name, z, background, np.ones(SHAPE))
    val, grad = value_and_grad(name, z, background, np.zeros(SHAPE))
    assert float(val) == 0.0 and np.all(np.asarray(grad) == 0)
    mask = np.ones(SHAPE)
    mask[:, 4:] = 0
    jitted = value_and_grad(name, z, background, mask)[0]
    gt = np.zeros(4) if name == "lovasz_hinge" else np.ones(4)
    want = [_lovasz_by_sets(errors[i, :4], gt) for i in range(3)]
    np.testing.assert_allclose(jitted, np.mean(want), rtol=1e-5)
    if name == "lovasz_hinge":
        np.testing.assert_allclose(want, errors[:, :4].max(1), rtol=1e-12)
    with jax.disable_jit():
        np.testing.assert_allclose(jitted, jnp.mean(fn(z, background, where=mask)), rtol=1e-6)
    with pytest.raises(ValueError, match="`axis_name`"):
        fn(z, background, axis_name="d")
