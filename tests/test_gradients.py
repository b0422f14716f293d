"""The closed-form gradients of Eq. 19 and Appendix B (Eqs. 24-25) against ``jax.grad``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dibe_jax import gradients, losses


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7])
@pytest.mark.parametrize(("lam", "gamma"), [(0.25, 2.0), (0.6, 0.5)])
def test_eq19_matches_grad_of_dibe_dis(alpha, lam, gamma):
    p = np.linspace(0.01, 0.49, 25)  # a missed defect pixel: y = 1, p < 0.5 (ŷ = 0)
    z = jnp.log(p) - jnp.log1p(-p)

    def loss_of_logit(v):
        return losses.dibe_dis(
            v.reshape(1, 1), jnp.ones((1, 1)), lam=lam, gamma=gamma, alpha=alpha, beta=0.7
        )[0]

    dl_dz = jax.vmap(jax.grad(loss_of_logit))(z)
    dl_dp = dl_dz / (p * (1 - p))  # chain rule: dp/dz = p (1 - p)
    want = gradients.dibe_dis_miss_grad(p, lam=lam, gamma=gamma, alpha=alpha)
    np.testing.assert_allclose(want, dl_dp, rtol=1e-9)
    assert np.all(np.asarray(want) < 0)


def test_eq19_gradient_magnitude_grows_with_alpha():  # Fig. 5
    p = np.linspace(0.05, 0.45, 9)
    g = [np.abs(gradients.dibe_dis_miss_grad(p, alpha=a)) for a in (0.0, 0.3, 0.7)]
    assert np.all(g[1] > g[0]) and np.all(g[2] > g[1])


def _tv(z, y, alpha, beta, eps):
    return 1 - losses.tversky(z, y, alpha=alpha, beta=beta, eps=eps)


@pytest.mark.parametrize("gamma", [0.5, 0.75, 1.0, 1.5, 3.0])
def test_eq24_eq25_match_grad_of_losses(gamma):
    rng = np.random.default_rng(int(gamma * 10))
    z = jnp.asarray(rng.normal(size=(1, 30)) * 2)
    y = jnp.asarray((rng.random((1, 30)) < 0.3).astype(np.float64))
    h = dict(alpha=0.4, beta=0.6, eps=1.0)
    tv = _tv(z, y, **h)[0]
    dtv_dz = jax.grad(lambda v: _tv(v, y, **h)[0])(z)
    ft = jax.grad(lambda v: losses.focal_tversky(v, y, gamma=gamma, **h)[0])(z)
    reg = jax.grad(lambda v: losses.dibe_reg(v, y, gamma=gamma, **h)[0])(z)
    np.testing.assert_allclose(
        ft, gradients.focal_tversky_grad(tv, gamma=gamma) * dtv_dz, rtol=1e-9, atol=1e-14
    )
    np.testing.assert_allclose(
        reg, gradients.dibe_reg_grad(tv, gamma=gamma) * dtv_dz, rtol=1e-9, atol=1e-14
    )


@pytest.mark.parametrize("gamma", [0.75, 1.5, 2.0])
def test_eq24_eq25_on_a_grid_of_tv(gamma):
    tv = jnp.linspace(0.02, 0.98, 49)
    ft = jax.vmap(jax.grad(lambda t: (1 - t) ** (1 / gamma)))(tv)
    reg = jax.vmap(jax.grad(lambda t: (-jnp.log(t)) ** (1 / gamma)))(tv)
    np.testing.assert_allclose(gradients.focal_tversky_grad(tv, gamma=gamma), ft, rtol=1e-12)
    np.testing.assert_allclose(gradients.dibe_reg_grad(tv, gamma=gamma), reg, rtol=1e-12)


def test_appendix_b_claims():
    tv = np.array([0.01, 0.05, 0.1])
    # near Tv = 0 DIBE_Reg's gradient is larger in magnitude than FT's (Fig. 13)
    assert np.all(np.abs(gradients.dibe_reg_grad(tv)) > np.abs(gradients.focal_tversky_grad(tv)))
    # FT (γ = 0.75) over-suppresses as Tv -> 1, DIBE_Reg (γ = 1.5) grows again
    near_one = np.array([0.9, 0.99, 0.999])
    ft = np.abs(gradients.focal_tversky_grad(near_one, gamma=0.75))
    reg = np.abs(gradients.dibe_reg_grad(near_one, gamma=1.5))
    assert np.all(np.diff(ft) < 0) and np.all(np.diff(reg) > 0)
