"""Losses of the other seed papers: PF-loss (Du et al.), the cross dropout focal loss (Su et al.)
and the unified focal loss (Yeung et al.): the papers' numbers, a second formulation,
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

LN10 = math.log(10)
C = 3
SHAPE = (3, 6)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _batch(seed, shape=SHAPE, c=C, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(*shape, c))
    y = rng.integers(0, c, size=shape)
    y[0] = np.where(y[0] == 2, 0, y[0])  # image 0 lacks class 2
    return z, y


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _logit(p):
    return math.log(p / (1 - p))


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


# ======================================================================== PF-loss


# The worked example of Sec. II-III: one minority sample (p = 0.4) and three majority ones
# (0.8, 0.7, 0.4); then the last majority sample, or the minority one, rises to 0.9.
EXAMPLES = {
    "k": ([0.4], [0.8, 0.7, 0.4]),
    "ma": ([0.4], [0.8, 0.7, 0.9]),
    "mi": ([0.9], [0.8, 0.7, 0.4]),
}
LABELS = np.array([[1, 0, 0, 0]])


def _binary_logits(case):
    """Sigmoid logits: ``p`` of the minority sample, ``1 - p`` of the majority ones."""
    mino, majo = EXAMPLES[case]
    return np.array([[_logit(mino[0])] + [_logit(1 - q) for q in majo]], np.float32)


def _softmax_logits(case):
    """Two-class logits ``[0, z]``: softmax gives the same probabilities as the sigmoid."""
    z = _binary_logits(case)
    return np.stack([np.zeros_like(z), z], -1)


@pytest.mark.parametrize(("case", "want"), [("k", 0.298), ("ma", 0.2475), ("mi", 0.122)])
def test_pf_reproduces_the_worked_examples(case, want):
    """PF = 0.298 -> 0.2475 / 0.122 (log base 10, with Eq. 9's 1/M = 1/2)."""
    for z in (_binary_logits(case), _softmax_logits(case)):
        got = float(losses.pf_loss(z, LABELS)) / LN10
        assert abs(got - want) < 6e-4, (z.shape, got)


def _rounds_to(value, printed):
    """``value`` agrees with the paper's ``printed`` number to its last printed decimal."""
    decimals = len(repr(printed).split(".")[1])
    return abs(value - printed) <= 0.5 * 10**-decimals + 1e-9


def test_other_losses_reproduce_the_worked_examples():
    """CE 1.05, WCE 0.615 (α = 1/N_j), focal 0.304 and FL(α) 0.197 (γ = 2), log base 10.

    The paper's per-class α is ``class_weights`` here.

    The paper's losses are sums over the 4 samples; ours are means over pixels, hence ``4·``.
    """
    z, y = _softmax_logits("k"), LABELS
    k = np.array([1 / 3, 1.0])  # 1/N_j: three majority samples, one minority
    cases = [
        (losses.softmax_cross_entropy(z, y), 1.05),
        (losses.softmax_cross_entropy(z, y, class_weights=k), 0.615),
        (losses.softmax_focal(z, y, gamma=2.0), 0.304),
        (losses.softmax_focal(z, y, class_weights=k, gamma=2.0), 0.197),
    ]
    for value, want in cases:
        assert _rounds_to(4 * float(value[0]) / LN10, want), (value, want)
    z_ma, z_mi = _softmax_logits("ma"), _softmax_logits("mi")
    for fn, kw, ma, mi in (
        (losses.softmax_cross_entropy, {"class_weights": k}, 0.497, 0.262),
        (losses.softmax_focal, {}, 0.162, 0.162),
        (losses.softmax_focal, {"class_weights": k}, 0.149, 0.054),
    ):
        assert _rounds_to(4 * float(fn(z_ma, y, **kw)[0]) / LN10, ma)
        assert _rounds_to(4 * float(fn(z_mi, y, **kw)[0]) / LN10, mi)


def ref_pf(z, y, w):
    """PF Eqs. 9-10 directly: arithmetic mean of the true-class probability per class."""
    p = _softmax(z.reshape(-1, z.shape[-1]))
    y, w = y.ravel(), w.ravel() > 0
    total = 0.0
    for j in range(p.shape[-1]):
        sel = (y == j) & w
        if sel.any():
            total += math.log(p[sel, j].mean())
    return -total / p.shape[-1]


def test_pf_matches_eqs_9_10_and_check_grads(x64):
    z, y = _batch(0)
    w = np.ones(SHAPE)
    w[2, 3:] = 0
    got = losses.pf_loss(jnp.asarray(z), y, where=w)
    assert got.shape == ()
    np.testing.assert_allclose(got, ref_pf(z, y, w), rtol=1e-12)
    # class 2 absent from the (unmasked) batch: contributes 0 but still counts in M = 3
    y2 = np.where(y == 2, 1, y)
    got = losses.pf_loss(jnp.asarray(z), y2, where=w)
    np.testing.assert_allclose(got, ref_pf(z, y2, w), rtol=1e-12)
    check_grads(lambda v: losses.pf_loss(v, y, where=w), (jnp.asarray(z),), order=1, modes=("fwd",))


def test_pf_binary_gradient_is_eq_14():
    """PF Eq. 14 is the gradient of PF Eq. 13 (no 1/M) in the logit: ``2 ∂PF/∂z``."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 5)).astype(np.float32)
    t = (rng.random((2, 5)) < 0.3).astype(np.float32)
    t[0, 0], t[0, 1] = 1, 0
    grad = 2 * jax.jit(jax.grad(lambda v: losses.pf_loss(v, t)))(z)
    yhat = 1 / (1 + np.exp(-z.astype(np.float64)))
    eq14 = -t * yhat * (1 - yhat) / np.sum(t * yhat) + (1 - t) * yhat * (1 - yhat) / np.sum(
        (1 - t) * (1 - yhat)
    )
    np.testing.assert_allclose(grad, eq14, rtol=1e-5, atol=1e-7)


def test_pf_pools_devices_masks_and_saturates():
    z, y = _batch(2)
    z = z.astype(np.float32)
    whole = losses.pf_loss(z, y)
    per_device = jax.vmap(lambda a, b: losses.pf_loss(a, b, axis_name="d"), axis_name="d")
    np.testing.assert_allclose(per_device(z[:, None], y[:, None]), np.full(3, whole), rtol=1e-5)
    val, grad = value_and_grad("pf_loss", z, y, np.zeros(SHAPE))
    assert float(val) == 0.0 and np.all(np.asarray(grad) == 0)
    with jax.disable_jit():
        np.testing.assert_allclose(losses.pf_loss(z, y), whole, rtol=1e-5)
    # a class whose pixels all have p = e^-200 gives log q = -200, not log 0
    zs = np.zeros((1, 2, 2), np.float32)
    zs[0, :, 1] = 200.0
    np.testing.assert_allclose(losses.pf_loss(zs, np.array([[0, 1]])), 100.0, rtol=1e-6)


# ======================================================================== CDFL


def ref_cdfl(mc, y, omega, gamma, class_weights):
    """CDFL Eqs. 4-6 per pixel, float64 NumPy: u from E[p²] - E[p]² as the paper writes it."""
    p = _softmax(mc)  # [T, B, P, C]
    t, b, n, c = p.shape
    a = np.broadcast_to(class_weights, (c,))  # the paper's α_c
    out = np.zeros(b)
    for i in range(b):
        for k in range(n):
            j = y[i, k]
            pt = p[:, i, k, j]
            u = np.mean(pt**2) - np.mean(pt) ** 2
            ce = -math.log(np.mean(pt))
            out[i] += ce + omega * a[j] * max(u, 0.0) ** gamma * ce
        out[i] /= n
    return out


def test_cdfl_identical_passes_give_cross_entropy():
    z, y = _batch(3)
    z = z.astype(np.float32)
    same = np.stack([z] * 5)
    ce = losses.softmax_cross_entropy(z, y)
    np.testing.assert_allclose(losses.cross_dropout_focal(same, y, omega=0.5), ce, rtol=1e-6)
    onehot = np.eye(C, dtype=np.float32)[y]
    np.testing.assert_allclose(losses.cross_dropout_focal(same, onehot), ce, rtol=1e-6)


def test_cdfl_hand_value():
    # T = 2 passes, one pixel of class 1: p = 0.5 then 0.75 -> p̄ = 0.625, u = 1/64
    mc = np.array([[[[0.0, 0.0]]], [[[0.0, math.log(3.0)]]]], np.float32)
    ce = -math.log(0.625)
    got = losses.cross_dropout_focal(mc, np.array([[1]]), omega=1.0, gamma=1.0, class_weights=0.75)
    np.testing.assert_allclose(got, [ce + 0.75 / 64 * ce], rtol=1e-6)
    got = losses.cross_dropout_focal(mc, np.array([[1]]))  # ω = 0.01, γ = 2, α = 0.75
    np.testing.assert_allclose(got, [ce * (1 + 0.01 * 0.75 / 64**2)], rtol=1e-6)


def test_cdfl_matches_eqs_4_6_and_check_grads(x64):
    z, y = _batch(4, shape=(2, 4))
    mc = z[None] + np.random.default_rng(5).normal(scale=0.7, size=(4, *z.shape))
    h = {"omega": 0.5, "gamma": 1.5, "class_weights": np.array([0.5, 0.75, 1.0])}
    got = losses.cross_dropout_focal(jnp.asarray(mc), y, **h)
    np.testing.assert_allclose(got, ref_cdfl(mc, y, **h), rtol=1e-9)

    def mean_loss(v):
        return jnp.mean(losses.cross_dropout_focal(v, y, **h))

    check_grads(mean_loss, (jnp.asarray(mc),), order=1, modes=("fwd",))


def test_cdfl_stop_gradient_u():
    """Same value; with ``stop_gradient_u`` the gradient treats ``u^γ`` as a constant weight."""
    z, y = _batch(6, shape=(2, 4))
    mc = (z[None] + np.random.default_rng(7).normal(scale=2.0, size=(3, *z.shape))).astype(
        np.float32
    )
    h = {"omega": 5.0, "gamma": 1.0, "class_weights": 1.0}

    def loss(v, stop):
        return jnp.mean(losses.cross_dropout_focal(v, y, stop_gradient_u=stop, **h))

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    v_flow, g_flow = grad(mc, False)
    v_stop, g_stop = grad(mc, True)
    np.testing.assert_allclose(v_flow, v_stop, rtol=1e-6)
    assert not np.allclose(g_flow, g_stop, atol=1e-4)
    onehot = jax.nn.one_hot(y, C)

    def weighted_ce(v, u):  # (1 + ω α u^γ) · (-log p̄_y), u a constant
        logp = jax.nn.log_softmax(v, axis=-1)
        log_mean = jax.nn.logsumexp(logp, axis=0) - jnp.log(v.shape[0])
        per = jnp.sum(onehot * (1 + h["omega"] * u ** h["gamma"]) * -log_mean, axis=-1)
        return jnp.mean(per)

    u = jnp.var(jax.nn.softmax(mc, axis=-1), axis=0)
    want = jax.jit(jax.grad(weighted_ce))(mc, u)
    np.testing.assert_allclose(g_stop, want, rtol=1e-5, atol=1e-7)


def test_cdfl_masks_jit_and_bad_input():
    z, y = _batch(8)
    mc = (z[None] + np.random.default_rng(9).normal(size=(2, *z.shape))).astype(np.float32)
    mask = np.ones(SHAPE)
    mask[:, 4:] = 0
    fn = losses.cross_dropout_focal
    want = ref_cdfl(mc[:, :, :4].astype(float), y[:, :4], omega=0.01, gamma=2.0, class_weights=0.75)
    val, _ = value_and_grad("cross_dropout_focal", mc, y, mask, gamma=2.0)
    np.testing.assert_allclose(val, np.mean(want), rtol=1e-5)
    with jax.disable_jit():
        np.testing.assert_allclose(fn(mc, y, where=mask), want, rtol=1e-5)
    val, grad = value_and_grad("cross_dropout_focal", mc, y, 0 * mask, gamma=2.0)
    assert float(val) == 0.0 and np.all(np.asarray(grad) == 0)
    with pytest.raises(ValueError, match="`mc_logits`.*rank"):
        fn(z[0], y[0])
    with pytest.raises(ValueError, match="`labels` must have shape"):
        fn(mc, y[:, :3])
    with pytest.raises(ValueError, match="`labels`.*\\[0, 3\\)"):
        fn(mc, np.full(SHAPE, 3))
    with pytest.raises(ValueError, match="`class_weights`.*\\(3,\\)"):
        fn(mc, y, class_weights=np.ones(2))
    with pytest.raises(ValueError, match="`class_weights`"):
        fn(mc, y, class_weights=-0.5)
    with pytest.raises(ValueError, match="`omega`"):
        fn(mc, y, omega=-0.1)
    with pytest.raises(ValueError, match="`stop_gradient_u`"):
        fn(mc, y, stop_gradient_u="yes")


# ================================================================= unified focal loss


def ref_unified(z, y, *, weight, delta, gamma, asymmetric, eps, binary):
    """Yeung et al. as in their reference code, float64 NumPy, one image at a time."""
    if binary:
        p1 = 1 / (1 + np.exp(-z))
        p = np.stack([1 - p1, p1], -1)
        y = y.astype(int)
    else:
        p = _softmax(z)
    c = p.shape[-1]
    onehot = np.eye(c)[y]
    out = []
    for i in range(len(p)):
        pi, gi = p[i].reshape(-1, c), onehot[i].reshape(-1, c)
        ce = -gi * np.log(pi)
        back = (1 - delta) * (1 - pi[:, 0]) ** gamma * ce[:, 0]
        fore_factor = 1.0 if asymmetric else (1 - pi[:, 1:]) ** gamma
        fore = delta * np.sum(fore_factor * ce[:, 1:], axis=-1)
        focal = np.mean(back + fore)
        tp, fn_, fp = (gi * pi).sum(0), (gi * (1 - pi)).sum(0), ((1 - gi) * pi).sum(0)
        mti = (tp + eps) / (tp + delta * fn_ + (1 - delta) * fp + eps)
        back_t = 1 - mti[0] if asymmetric else (1 - mti[0]) ** (1 - gamma)
        fore_t = (1 - mti[1:]) ** (1 - gamma)
        tversky = np.mean(np.concatenate([[back_t], fore_t]))
        out.append(weight * focal + (1 - weight) * tversky)
    return np.array(out)


UF = {"weight": 0.3, "delta": 0.7, "gamma": 0.4, "eps": 0.5}


@pytest.mark.parametrize("asymmetric", [True, False])
def test_unified_focal_matches_reference_and_check_grads(asymmetric, x64):
    z, y = _batch(10)
    h = {**UF, "asymmetric": asymmetric}
    got = losses.unified_focal(jnp.asarray(z), y, **h)
    np.testing.assert_allclose(got, ref_unified(z, y, binary=False, **h), rtol=1e-10)
    zb, yb = z[..., 1], (y == 1).astype(np.float64)
    got = losses.unified_focal_binary(jnp.asarray(zb), yb, **h)
    np.testing.assert_allclose(got, ref_unified(zb, yb, binary=True, **h), rtol=1e-10)

    def mean_loss(v):
        return jnp.mean(losses.unified_focal(v, y, **h))

    check_grads(mean_loss, (jnp.asarray(z),), order=1, modes=("fwd",))


@pytest.mark.parametrize("asymmetric", [True, False])
def test_unified_focal_recovers_cross_entropy_and_dice(asymmetric):
    """Yeung: γ = 0 and δ = 0.5 give CE (λ = 1, halved: δ = 1/2 weights both classes) and the
    Dice loss averaged over all classes (λ = 0, smoothing 2ε), in both forms."""
    z, y = _batch(11)
    z = z.astype(np.float32)
    uf = functools.partial(
        losses.unified_focal, delta=0.5, gamma=0.0, eps=0.25, asymmetric=asymmetric
    )
    close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=1e-6)
    close(uf(z, y, weight=1.0), 0.5 * losses.softmax_cross_entropy(z, y))
    close(uf(z, y, weight=0.0), losses.dice_multiclass(z, y, eps=0.5, classes="all"))
    if asymmetric:  # the binary form, and binary logits z as two-class logits [0, z]
        zb, yb = z[..., 1], (y == 1).astype(np.float32)
        ufb = functools.partial(losses.unified_focal_binary, delta=0.5, gamma=0.0, eps=0.25)
        close(ufb(zb, yb, weight=1.0), 0.5 * losses.bce(zb, yb))
        dice = (losses.dice(zb, yb, eps=0.5) + losses.dice(-zb, 1 - yb, eps=0.5)) / 2
        close(ufb(zb, yb, weight=0.0), dice)
        z2 = np.stack([np.zeros_like(zb), zb], -1)
        close(losses.unified_focal_binary(zb, yb), losses.unified_focal(z2, yb.astype(np.int32)))


def test_unified_focal_hand_value_and_asymmetry():
    # one defect pixel at p = 1/2 and one background pixel at p = 1/2, λ = 1 (focal only):
    # asymmetric: (δ·ln2 + (1-δ)·½^γ·ln2) / 2; symmetric: both terms carry ½^γ
    z, y = np.zeros((1, 2), np.float32), np.array([[1, 0]])
    d, g = 0.6, 0.5
    want_a = (d + (1 - d) * 0.5**g) * math.log(2) / 2
    want_s = (d + (1 - d)) * 0.5**g * math.log(2) / 2
    np.testing.assert_allclose(losses.unified_focal_binary(z, y, weight=1.0), [want_a], rtol=1e-6)
    got = losses.unified_focal_binary(z, y, weight=1.0, asymmetric=False)
    np.testing.assert_allclose(got, [want_s], rtol=1e-6)
    # λ = 0, perfect prediction: 1 - mTI = 0 for both classes
    zp = np.array([[100.0, -100.0]], np.float32)
    np.testing.assert_allclose(losses.unified_focal_binary(zp, y, weight=0.0), [0.0], atol=1e-6)


def test_unified_focal_masks_pooling_jit_and_bad_input():
    z, y = _batch(12)
    z = z.astype(np.float32)
    fn = losses.unified_focal
    mask = np.ones(SHAPE)
    mask[:, 4:] = 0
    h = {"weight": 0.5, "delta": 0.6, "gamma": 0.5, "eps": 1e-6}
    ref = functools.partial(ref_unified, asymmetric=True, binary=False, **h)
    val, grad = value_and_grad("unified_focal", z, y, mask, gamma=0.5, eps=1e-6)
    np.testing.assert_allclose(val, np.mean(ref(z[:, :4].astype(float), y[:, :4])), rtol=1e-5)
    assert np.all(np.asarray(grad)[:, 4:] == 0)
    with jax.disable_jit():
        np.testing.assert_allclose(jnp.mean(fn(z, y, where=mask)), val, rtol=1e-5)
    # pooling: the focal Tversky counts of the whole batch; the focal term stays per image
    whole_t = ref(z.reshape(1, -1, C).astype(float), y.reshape(1, -1), **{"weight": 0.0})
    focal = ref(z.astype(float), y, **{"weight": 1.0})
    want = 0.5 * focal + 0.5 * whole_t
    np.testing.assert_allclose(fn(z, y, pool_batch=True), want, rtol=1e-5)
    per_device = jax.vmap(lambda a, b: fn(a, b, axis_name="d"), axis_name="d")
    np.testing.assert_allclose(per_device(z[:, None], y[:, None]).ravel(), want, rtol=1e-5)
    for arg, bad in [("gamma", 1.5), ("delta", -0.1), ("weight", 2.0), ("asymmetric", 1)]:
        with pytest.raises(ValueError, match=f"`{arg}`"):
            fn(z, y, **{arg: bad})
    with pytest.raises(ValueError, match="`labels`"):
        fn(z, np.full(SHAPE, 5))
    with pytest.raises(ValueError, match="`labels` must have shape"):
        fn(z, y.astype(np.float32)[..., None])


# ========================================================================== finiteness


@settings(max_examples=10, deadline=None)
@given(
    z=hnp.arrays(np.float32, (*SHAPE, C), elements=st.floats(-100, 100, width=32)),
    y=hnp.arrays(np.int32, SHAPE, elements=st.integers(0, C - 1)),
    case=st.sampled_from(["any", "one_class", "masked"]),
)
def test_finite_for_any_logits(z, y, case):
    mask = np.zeros(SHAPE) if case == "masked" else np.ones(SHAPE)
    if case == "one_class":
        y = np.full_like(y, 1)
    yb = (y == 1).astype(np.float32)
    _finite("pf_loss", z, y, mask)
    _finite("pf_loss", z[..., 1], yb, mask)  # binary form
    _finite("unified_focal", z, y, mask, gamma=0.5, eps=1e-6)
    _finite("unified_focal_binary", z[..., 1], yb, mask, gamma=0.5, eps=1e-6)
    mc = np.stack([z, z[..., ::-1]])
    _finite("cross_dropout_focal", mc, y, mask, gamma=2.0)
    _finite("cross_dropout_focal", mc, y, mask, gamma=2.0, stop_gradient_u=True)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_finite_at_perfect_and_saturated_predictions(gamma):
    y = np.array([[0, 1, 2, 2, 0, 0], [1] * 6, [0] * 6])
    onehot = np.eye(C)[y]
    ones = np.ones(SHAPE)
    for z in (np.where(onehot > 0, 100.0, -100.0), np.where(onehot > 0, -100.0, 100.0)):
        z = z.astype(np.float32)
        yb = (y == 1).astype(np.float32)
        for eps in (0.0, 1e-6):
            _finite("unified_focal", z, y, ones, gamma=gamma, eps=eps)
            _finite("unified_focal_binary", z[..., 1], yb, ones, gamma=gamma, eps=eps)
        _finite("pf_loss", z, y, ones)
        _finite("cross_dropout_focal", np.stack([z, -z]), y, ones, gamma=gamma)


def test_registry():
    for name in ("pf_loss", "cross_dropout_focal", "unified_focal"):
        assert name in losses.names() and losses.describe(name)
    assert losses.hyperparameters("pf_loss") == {}
    assert losses.hyperparameters("unified_focal") == dict(
        weight=0.5, delta=0.6, gamma=0.5, asymmetric=True, eps=1e-6
    )
    assert losses.hyperparameters("cross_dropout_focal") == dict(
        omega=0.01, gamma=2.0, class_weights=0.75, stop_gradient_u=False
    )
