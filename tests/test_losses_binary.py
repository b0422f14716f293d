"""Binary losses of the DIBE paper: hand values, a second formulation, identities, gradients,
the α/β direction, masks, pooling, bad input and finiteness."""

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
from dibe_jax.losses import binary

BINARY = [
    "bce",
    "wbce",
    "focal",
    "dibe_dis",
    "dice",
    "tversky",
    "focal_tversky",
    "dibe_reg",
    "combo",
    "exp_log",
    "hybrid_focal",
    "dibe",
]


# ----------------------------------------------------------------------------------------
# A second formulation: the paper's equations written case by case, pixel by pixel, in
# float64 NumPy, independent of the library's log-space vectorised code.


def _p(z):
    return 1.0 / (1.0 + math.exp(-z))


def ref_pixel(name, z, y, h):
    p = _p(z)
    lam, g = h.get("lam", 0.25), h.get("gamma", 2.0)
    if name == "wbce":
        return -lam * math.log(p) if y else -(1 - lam) * math.log(1 - p)
    if name == "focal":
        if y:
            return -lam * (1 - p) ** g * math.log(p)
        return -(1 - lam) * p**g * math.log(1 - p)
    if name == "dibe_dis":  # Eq. 18, case by case
        a, b = h.get("alpha", 0.3), h.get("beta", 0.7)
        hit = z >= 0
        if y and hit:
            return -lam * (1 - p) ** g * math.log(p)
        if y and not hit:
            return -lam * (1 - p ** (1 + a)) ** g * (1 + a) * math.log(p)
        if not y and not hit:
            return -(1 - lam) * p**g * math.log(1 - p)
        return -(1 - lam) * (1 - (1 - p) ** (1 + b)) ** g * (1 + b) * math.log(1 - p)
    if name == "el_ce":  # Eq. 11
        gce = h.get("gamma_ce", 1.0)
        if y:
            return lam * (-math.log(p)) ** gce
        return (1 - lam) * (-math.log(1 - p)) ** gce
    raise KeyError(name)


def ref_counts(z, y):
    p = np.array([_p(v) for v in z])
    return float((p * y).sum()), float((p * (1 - y)).sum()), float(((1 - p) * y).sum())


def ref_loss(name, z, y, **h):
    """One image: ``z``, ``y`` flat float64 arrays."""

    def mean(n, **k):
        return float(np.mean([ref_pixel(n, a, b, {**h, **k}) for a, b in zip(z, y, strict=True)]))

    tp, fp, fn = ref_counts(z, y)
    eps = h.get("eps", 1.0)
    a, b = h.get("alpha", 0.3), h.get("beta", 0.7)
    tv = (tp + eps) / (tp + a * fn + b * fp + eps)  # Eq. 7, α on misses (docs/conventions.md)
    dc = (2 * tp + eps) / (2 * tp + fp + fn + eps)  # Eq. 5
    th = h.get("theta", 0.5)
    if name == "bce":
        return 2 * mean("wbce", lam=0.5)
    if name in ("wbce", "focal", "dibe_dis"):
        return mean(name)
    if name == "dice":
        return 1 - dc
    if name == "tversky":
        return 1 - tv
    if name == "focal_tversky":
        return (1 - tv) ** (1 / h.get("gamma", 0.75))
    if name == "dibe_reg":
        return (-math.log(tv)) ** (1 / h.get("gamma", 1.5))
    if name == "combo":
        return th * mean("wbce") + (1 - th) * (1 - dc)
    if name == "exp_log":
        return th * mean("el_ce") + (1 - th) * (-math.log(dc)) ** h.get("gamma_dc", 1.0)
    if name == "hybrid_focal":
        ft = (1 - tv) ** (1 / h.get("gamma_ft", 0.75))
        return th * mean("focal") + (1 - th) * ft
    if name == "dibe":
        g = h.get("gamma", 2.0)
        return th * mean("dibe_dis") + (1 - th) * (-math.log(tv)) ** (1 / g)
    raise KeyError(name)


HYPER = {  # non-default values so every hyperparameter is exercised
    "bce": {},
    "wbce": {"lam": 0.3},
    "focal": {"lam": 0.4, "gamma": 1.5},
    "dibe_dis": {"lam": 0.35, "gamma": 1.7, "alpha": 0.6, "beta": 0.2},
    "dice": {"eps": 0.5},
    "tversky": {"alpha": 0.8, "beta": 0.2, "eps": 0.7},
    "focal_tversky": {"alpha": 0.6, "beta": 0.4, "gamma": 0.8, "eps": 1.0},
    "dibe_reg": {"alpha": 0.2, "beta": 0.8, "gamma": 1.3, "eps": 0.9},
    "combo": {"theta": 0.3, "lam": 0.6, "eps": 1.0},
    "exp_log": {"theta": 0.4, "lam": 0.3, "gamma_ce": 0.7, "gamma_dc": 1.4, "eps": 1.0},
    "hybrid_focal": dict(theta=0.6, lam=0.3, gamma=1.5, alpha=0.4, beta=0.6, gamma_ft=0.8, eps=1.0),
    "dibe": {"theta": 0.4, "lam": 0.3, "gamma": 1.6, "alpha": 0.7, "beta": 0.3, "eps": 1.0},
}


def _random_batch(seed, shape=(3, 5, 4), fg=0.3, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=shape)
    y = (rng.random(shape) < fg).astype(np.float64)
    y[0] = 0  # one all-background image
    return z, y


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("name", BINARY)
def test_matches_case_by_case_reference(name, x64):
    z, y = _random_batch(0)
    got = np.asarray(losses.get(name)(jnp.asarray(z), jnp.asarray(y), **HYPER[name]))
    want = [ref_loss(name, z[i].ravel(), y[i].ravel(), **HYPER[name]) for i in range(len(z))]
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------- hand-computed values


def test_hand_values():
    half = jnp.zeros((1, 2))  # p = 0.5 everywhere
    y = jnp.array([[1, 0]])
    ln2 = math.log(2)
    np.testing.assert_allclose(losses.bce(half, y), [ln2], rtol=1e-6)
    np.testing.assert_allclose(losses.wbce(half, y, lam=0.25), [ln2 / 2], rtol=1e-6)
    # focal at p = 0.5, λ = 0.5, γ = 2: each pixel 0.5 · 0.25 · ln 2
    np.testing.assert_allclose(losses.focal(half, y, lam=0.5, gamma=2.0), [ln2 / 8], rtol=1e-6)
    # DIBE_Dis, one missed defect pixel at p = 0.25 (logit -ln 3), λ=.25, γ=2, α=.3:
    # -0.25 · 1.3 · (1 - 0.25^1.3)^2 · ln 0.25 = 0.31418 (worked by hand)
    miss = jnp.array([[-math.log(3.0)]])
    np.testing.assert_allclose(losses.dibe_dis(miss, jnp.ones((1, 1))), [0.31418], rtol=1e-4)
    # hard predictions: TP = 2, FN = 1, FP = 1 (logits ±100)
    z = jnp.array([[100.0, 100.0, -100.0, 100.0, -100.0]])
    yy = jnp.array([[1, 1, 1, 0, 0]])
    # Tv = (2 + 1) / (2 + 0.3·1 + 0.7·1 + 1) = 0.75
    np.testing.assert_allclose(losses.tversky(z, yy), [0.25], rtol=1e-6)
    np.testing.assert_allclose(losses.dice(z, yy, eps=0.0), [2 / 6], rtol=1e-6)
    np.testing.assert_allclose(losses.focal_tversky(z, yy, gamma=0.5), [0.0625], rtol=1e-6)
    np.testing.assert_allclose(
        losses.dibe_reg(z, yy, gamma=1.5), [math.log(4 / 3) ** (2 / 3)], rtol=1e-6
    )


# ----------------------------------------------------------------------------- identities


def test_identities():
    z, y = (jnp.asarray(a, jnp.float32) for a in _random_batch(1))
    close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=1e-6)
    close(losses.tversky(z, y, alpha=0.5, beta=0.5, eps=0.5), losses.dice(z, y, eps=1.0))
    close(losses.focal(z, y, lam=0.3, gamma=0.0), losses.wbce(z, y, lam=0.3))
    close(losses.dibe_dis(z, y, alpha=0.0, beta=0.0), losses.focal(z, y))
    close(losses.focal_tversky(z, y, gamma=1.0), losses.tversky(z, y))
    close(losses.wbce(z, y, lam=0.5), losses.bce(z, y) / 2)
    # compound losses at θ ∈ {0, 1}
    close(losses.combo(z, y, theta=1.0, lam=0.4), losses.wbce(z, y, lam=0.4))
    close(losses.combo(z, y, theta=0.0), losses.dice(z, y))
    close(losses.exp_log(z, y, theta=1.0, lam=0.4), losses.wbce(z, y, lam=0.4))
    close(losses.exp_log(z, y, theta=0.0), -jnp.log(1 - losses.dice(z, y)))
    close(losses.hybrid_focal(z, y, theta=1.0), losses.focal(z, y))
    close(losses.hybrid_focal(z, y, theta=0.0), losses.focal_tversky(z, y))
    close(losses.dibe(z, y, theta=1.0), losses.dibe_dis(z, y))
    close(losses.dibe(z, y, theta=0.0, gamma=1.5), losses.dibe_reg(z, y, gamma=1.5))


# ------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", BINARY)
def test_check_grads_float64(name, x64):
    z, y = _random_batch(2, shape=(2, 6))
    z = np.where(np.abs(z) < 0.05, 0.5, z)  # keep clear of DIBE_Dis's ŷ switch at 0
    y = jnp.asarray(y)

    @jax.jit
    def f(logits):
        return jnp.mean(losses.get(name)(logits, y, **HYPER[name]))

    order = 2 if name in ("dibe", "dibe_reg", "dibe_dis") else 1
    check_grads(f, (jnp.asarray(z),), order=order, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["dibe_dis", "tversky", "dibe_reg", "dibe", "focal"])
def test_gradient_wrt_hyperparameters(name, x64):
    z, y = (jnp.asarray(a) for a in _random_batch(3, shape=(2, 6)))
    z = jnp.where(jnp.abs(z) < 0.05, 0.5, z)
    key = "gamma" if name == "focal" else "alpha"

    def f(v):
        return jnp.mean(losses.get(name)(z, y, **{**HYPER[name], key: v}))

    check_grads(f, (jnp.asarray(HYPER[name][key]),), order=1, modes=("rev",))


# ----------------------------------------------------- α / β direction (conventions, Table 6)


def test_alpha_weights_misses():
    # every hard error is a miss (label 1, logit < 0); no false alarms
    z = jnp.array([[-2.0, -1.0, 3.0, -3.0, -2.0, -1.5]])
    y = jnp.array([[1, 1, 1, 0, 0, 0]])
    for name in ("dibe_dis", "tversky", "dibe_reg", "dibe"):
        fn = losses.get(name)
        lo, hi = fn(z, y, alpha=0.3), fn(z, y, alpha=0.7)
        assert float(hi[0]) > float(lo[0]), name


def test_dibe_dis_false_alarms_ignore_alpha():
    # every hard error is a false alarm (label 0, logit >= 0); the defect pixel is hit
    z = jnp.array([[3.0, 1.0, 2.0, -2.0]])
    y = jnp.array([[1, 0, 0, 0]])
    ref = losses.dibe_dis(z, y, alpha=0.0)
    for a in (0.1, 0.5, 0.9, 3.0):
        assert float(losses.dibe_dis(z, y, alpha=a)[0]) == float(ref[0])
    assert float(losses.dibe_dis(z, y, beta=0.9)[0]) > float(losses.dibe_dis(z, y, beta=0.1)[0])


# --------------------------------------------------------- shapes, masks, pooling, dtypes


@pytest.mark.parametrize("name", BINARY)
def test_trailing_channel_and_label_dtypes(name):
    z, y = _random_batch(4, shape=(2, 4, 5))
    fn = losses.get(name)
    ref = fn(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(fn(z[..., None].astype(np.float32), y[..., None]), ref, rtol=1e-6)
    np.testing.assert_allclose(fn(z.astype(np.float32), y.astype(bool)), ref, rtol=1e-6)
    np.testing.assert_allclose(fn(z.astype(np.float32), y.astype(np.uint8)), ref, rtol=1e-6)


@pytest.mark.parametrize("name", BINARY)
def test_where_drops_pixels(name):
    z, y = _random_batch(5, shape=(2, 8))
    z, y = z.astype(np.float32), y.astype(np.float32)
    fn = losses.get(name)
    mask = np.zeros_like(y)
    mask[:, :5] = 1
    garbage = z.copy()
    garbage[:, 5:] = 50.0  # masked pixels must not matter
    np.testing.assert_allclose(
        fn(garbage, y, where=mask), fn(z[:, :5], y[:, :5]), rtol=1e-5, atol=1e-7
    )
    full_mask = np.zeros_like(y)
    out, grad = jax.value_and_grad(lambda v: jnp.sum(fn(v, y, where=full_mask)))(z)
    np.testing.assert_array_equal(out, 0.0)
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)


@pytest.mark.parametrize("name", ["dice", "tversky", "focal_tversky", "dibe_reg"])
def test_pool_batch_and_axis_name(name):
    z, y = _random_batch(6, shape=(4, 6))
    z, y = z.astype(np.float32), y.astype(np.float32)
    fn = losses.get(name)
    whole = fn(z.reshape(1, -1), y.reshape(1, -1))  # one image holding every pixel
    np.testing.assert_allclose(fn(z, y, pool_batch=True), np.repeat(whole, 4), rtol=1e-5)
    # two "devices" of two images each, pooled with a named axis
    per_device = jax.vmap(lambda a, b: fn(a, b, axis_name="d"), axis_name="d")
    out = per_device(z.reshape(2, 2, 6), y.reshape(2, 2, 6))
    np.testing.assert_allclose(out, np.full((2, 2), whole[0]), rtol=1e-5)


def test_vmap_over_alpha_and_single_compile():
    z, y = (jnp.asarray(a, jnp.float32) for a in _random_batch(7))
    alphas = jnp.array([0.1, 0.3, 0.5, 0.7, 0.9])
    swept = jax.vmap(lambda a: losses.dibe(z, y, alpha=a))(alphas)
    single = jnp.stack([losses.dibe(z, y, alpha=float(a)) for a in alphas])
    np.testing.assert_allclose(swept, single, rtol=1e-6)
    before = binary._dibe._cache_size()
    for a in (0.15, 0.25, 0.35):
        losses.dibe(z, y, alpha=a, beta=1 - a)
    assert binary._dibe._cache_size() == before  # hyperparameters are traced, not static


@pytest.mark.parametrize("name", BINARY)
def test_jit_and_no_jit_agree(name):
    z, y = (jnp.asarray(a, jnp.float32) for a in _random_batch(8))
    fn = losses.get(name)
    jitted = jax.jit(lambda a, b: fn(a, b))(z, y)
    with jax.disable_jit():
        eager = fn(z, y)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BINARY)
def test_bfloat16_logits(name):
    z, y = _random_batch(9)
    fn = losses.get(name)
    out = fn(jnp.asarray(z, jnp.bfloat16), y)
    assert out.dtype == jnp.float32
    ref = fn(jnp.asarray(jnp.asarray(z, jnp.bfloat16), jnp.float32), y)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    g = jax.grad(lambda v: jnp.mean(fn(v, y)))(jnp.asarray(z, jnp.bfloat16))
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


# ------------------------------------------------------------------- numerical safety


@functools.cache
def _value_and_grad(name):
    fn = losses.get(name)
    return jax.jit(jax.value_and_grad(lambda v, y, h: jnp.mean(fn(v, y, **h))))


def _finite(name, z, y, **h):
    val, grad = _value_and_grad(name)(z, jnp.asarray(y, jnp.float32), h)
    assert np.isfinite(float(val)), (name, h)
    assert np.all(np.isfinite(np.asarray(grad))), (name, h)


@settings(max_examples=15, deadline=None)
@given(
    z=hnp.arrays(np.float32, (2, 12), elements=st.floats(-100, 100, width=32)),
    y=hnp.arrays(np.int8, (2, 12), elements=st.integers(0, 1)),
    fill=st.sampled_from([None, 0, 1]),
)
def test_finite_for_any_logits(z, y, fill):
    if fill is not None:
        y = np.full_like(y, fill)
    for name in BINARY:
        _finite(name, jnp.asarray(z), y)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("gamma", [0.5, 1.5, 4.0])
def test_finite_at_perfect_and_saturated_predictions(name, gamma):
    y = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32)
    h = {k: gamma for k in losses.hyperparameters(name) if k.startswith("gamma")}
    no_eps = {**h, "eps": 0.0} if "eps" in losses.hyperparameters(name) else h
    for z in (np.where(y > 0, 100.0, -100.0), np.where(y > 0, -100.0, 100.0), 0 * y):
        _finite(name, jnp.asarray(z, jnp.float32), y, **h)
        _finite(name, jnp.asarray(z, jnp.float32), y, **no_eps)


def test_dibe_reg_gradient_at_tv_near_one_is_finite_and_nonzero():
    # (-log Tv)^(1/γ) with γ > 1 has an infinite derivative at Tv = 1; we stay finite
    y = np.array([[1, 0, 0, 0]], np.float32)
    z = jnp.asarray([[8.0, -8.0, -8.0, -8.0]])
    g = jax.grad(lambda v: jnp.sum(losses.dibe_reg(v, y, gamma=1.5)))(z)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"lam": 1.5}, "lam"),
        ({"theta": -0.1}, "theta"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"eps": -1.0}, "eps"),
        ({"alpha": -0.2}, "alpha"),
        ({"beta": float("nan")}, "beta"),
    ],
)
def test_bad_hyperparameters(kwargs, arg):
    z, y = jnp.zeros((1, 4)), jnp.zeros((1, 4))
    with pytest.raises(ValueError, match=f"`{arg}`"):
        losses.dibe(z, y, **kwargs)


def test_bad_arrays():
    z, y = jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="`labels`.*shape"):
        losses.dice(z, y[:, :3])
    with pytest.raises(ValueError, match="`logits`.*rank"):
        losses.dice(jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="`logits`.*floating"):
        losses.bce(jnp.zeros((2, 4), jnp.int32), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="`where`"):
        losses.focal(z, y, where=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="`gamma`"):
        losses.focal_tversky(z, y, gamma=0)
    with pytest.raises(ValueError, match="`pool_batch`"):
        losses.dice(z, y, pool_batch=1)
    # focal and DIBE_Dis allow γ = 0 (the paper: focal with γ = 0 is WBCE)
    losses.focal(z, y, gamma=0.0)
    losses.dibe_dis(z, y, gamma=0.0)


def test_registry():
    assert set(BINARY) <= set(losses.names())
    assert losses.get("dibe") is losses.dibe
    paper = {"theta": 0.5, "lam": 0.25, "gamma": 2.0, "alpha": 0.3, "beta": 0.7, "eps": 1.0}
    assert losses.hyperparameters("dibe") == paper
    assert "Eq. 21" in losses.describe("dibe")
    with pytest.raises(ValueError, match="unknown loss 'dibee'.*dibe_dis"):
        losses.get("dibee")
    with pytest.raises(ValueError, match="'gamma_ft'"):
        losses.check_hyperparameters("dibe", {"gamma_ft": 1.0})
    losses.check_hyperparameters("hybrid_focal", {"gamma_ft": 1.0})
