"""Straightforward PyTorch eager versions of the DIBE paper's binary losses (benchmark only).

Written the way a PyTorch user would write each equation: per-pixel tensors, ``torch.where``
for the cases of Eq. 18, autograd for the backward pass. Same conventions as
:mod:`dibe_jax.losses` (α on misses, β on false alarms, means over each image's pixels).
Used only by ``benchmarks/losses.py``; torch is never a dependency of the package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def _logs(z):
    return F.logsigmoid(z), F.logsigmoid(-z)


def _mean(x):
    return x.flatten(1).mean(1)


def _counts(z, y):
    p = torch.sigmoid(z).flatten(1)
    y = y.flatten(1)
    return (p * y).sum(1), ((1 - p) * y).sum(1), (p * (1 - y)).sum(1)


def bce(z, y):
    log_p, log_q = _logs(z)
    return _mean(-(y * log_p + (1 - y) * log_q))


def wbce(z, y, lam=0.25):
    log_p, log_q = _logs(z)
    return _mean(-(lam * y * log_p + (1 - lam) * (1 - y) * log_q))


def focal(z, y, lam=0.25, gamma=2.0):
    p = torch.sigmoid(z)
    log_p, log_q = _logs(z)
    pos = -lam * (1 - p) ** gamma * log_p
    neg = -(1 - lam) * p**gamma * log_q
    return _mean(y * pos + (1 - y) * neg)


def dibe_dis(z, y, lam=0.25, gamma=2.0, alpha=0.3, beta=0.7):
    p = torch.sigmoid(z)
    log_p, log_q = _logs(z)
    hit = z >= 0
    pos_w = torch.where(hit, (1 - p) ** gamma, (1 + alpha) * (1 - p ** (1 + alpha)) ** gamma)
    neg_w = torch.where(hit, (1 + beta) * (1 - (1 - p) ** (1 + beta)) ** gamma, p**gamma)
    return _mean(y * (-lam * pos_w * log_p) + (1 - y) * (-(1 - lam) * neg_w * log_q))


def dice(z, y, eps=1.0):
    tp, fn, fp = _counts(z, y)
    return 1 - (2 * tp + eps) / (2 * tp + fp + fn + eps)


def _tv(z, y, alpha, beta, eps):
    tp, fn, fp = _counts(z, y)
    return (tp + eps) / (tp + alpha * fn + beta * fp + eps)


def tversky(z, y, alpha=0.3, beta=0.7, eps=1.0):
    return 1 - _tv(z, y, alpha, beta, eps)


def focal_tversky(z, y, alpha=0.3, beta=0.7, gamma=0.75, eps=1.0):
    return (1 - _tv(z, y, alpha, beta, eps)).clamp_min(1e-12) ** (1 / gamma)


def dibe_reg(z, y, alpha=0.3, beta=0.7, gamma=1.5, eps=1.0):
    return (-torch.log(_tv(z, y, alpha, beta, eps))).clamp_min(1e-12) ** (1 / gamma)


def combo(z, y, theta=0.5, lam=0.25, eps=1.0):
    return theta * wbce(z, y, lam) + (1 - theta) * dice(z, y, eps)


def exp_log(z, y, theta=0.5, lam=0.25, gamma_ce=1.0, gamma_dc=1.0, eps=1.0):
    log_p, log_q = _logs(z)
    ce = y * lam * (-log_p).clamp_min(1e-12) ** gamma_ce
    ce = ce + (1 - y) * (1 - lam) * (-log_q).clamp_min(1e-12) ** gamma_ce
    dc = 1 - dice(z, y, eps)
    return theta * _mean(ce) + (1 - theta) * (-torch.log(dc)).clamp_min(1e-12) ** gamma_dc


def hybrid_focal(z, y, theta=0.5, lam=0.25, gamma=2.0, alpha=0.3, beta=0.7, gamma_ft=0.75, eps=1.0):
    ft = focal_tversky(z, y, alpha, beta, gamma_ft, eps)
    return theta * focal(z, y, lam, gamma) + (1 - theta) * ft


def dibe(z, y, theta=0.5, lam=0.25, gamma=2.0, alpha=0.3, beta=0.7, eps=1.0):
    reg = dibe_reg(z, y, alpha, beta, gamma, eps)
    return theta * dibe_dis(z, y, lam, gamma, alpha, beta) + (1 - theta) * reg


LOSSES = {
    f.__name__: f
    for f in (
        bce,
        wbce,
        focal,
        dibe_dis,
        dice,
        tversky,
        focal_tversky,
        dibe_reg,
        combo,
        exp_log,
        hybrid_focal,
        dibe,
    )
}
