"""Multi-class confusion matrices, per-class IoU / precision / recall / OII, mIoU and mAcc
(CDFL Eqs. 7-8), and the PF paper's ROC AUC and G-mean for binary maps."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dibe_jax import metrics

C = 4
SHAPE = (3, 5, 4)


def _data(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*SHAPE, C)).astype(np.float32)
    labels = rng.integers(0, C, size=SHAPE)
    labels[0] = np.where(labels[0] == 3, 0, labels[0])  # class 3 absent from image 0
    return logits, labels


def _cm_loop(pred, true, mask=None):
    cm = np.zeros((C, C), np.int64)
    for p, t, m in zip(
        pred.ravel(),
        true.ravel(),
        np.ones(pred.size) if mask is None else mask.ravel(),
        strict=True,
    ):
        if m:
            cm[t, p] += 1
    return cm


# ---------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_matches_a_loop_and_is_additive():
    logits, labels = _data(0)
    mask = np.random.default_rng(1).random(SHAPE) < 0.7
    cm = metrics.confusion_matrix(logits, labels, C, where=mask)
    assert cm.shape == (3, C, C) and cm.dtype == jnp.int32
    pred = logits.argmax(-1)
    for i in range(3):
        np.testing.assert_array_equal(cm[i], _cm_loop(pred[i], labels[i], mask[i]))
    # additive: per-image matrices sum to the matrix of the batch as one image
    whole = metrics.confusion_matrix(
        logits.reshape(1, -1, C), labels.reshape(1, -1), C, where=mask.reshape(1, -1)
    )
    np.testing.assert_array_equal(cm.sum(0), whole[0])
    # integer predictions give the same matrix; under jit too
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, labels, C, where=mask), cm)
    jitted = jax.jit(lambda a, b, m: metrics.confusion_matrix(a, b, C, where=m))(
        logits, labels, mask
    )
    np.testing.assert_array_equal(jitted, cm)


def test_binary_logits_agree_with_binary_counts():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2, 7)).astype(np.float32)
    z[0, 0] = 0.0  # logit 0 is predicted 1, as in the binary convention
    y = rng.integers(0, 2, size=(2, 7))
    cm = metrics.confusion_matrix(z, y, 2)
    c = metrics.confusion_counts(z, y)
    np.testing.assert_array_equal(cm[:, 1, 1], c.tp)
    np.testing.assert_array_equal(cm[:, 0, 1], c.fp)
    np.testing.assert_array_equal(cm[:, 1, 0], c.fn)
    np.testing.assert_array_equal(cm[:, 0, 0], c.tn)
    per_class = metrics.class_counts(cm.sum(0))
    total = c.sum()
    assert [int(v) for v in (per_class.tp[1], per_class.fp[1], per_class.fn[1])] == [
        int(total.tp),
        int(total.fp),
        int(total.fn),
    ]


def test_confusion_matrix_bad_input():
    logits, labels = _data(3)
    with pytest.raises(ValueError, match="`labels`.*\\[0, 4\\)"):
        metrics.confusion_matrix(logits, np.where(labels == 0, 4, labels), C)
    with pytest.raises(ValueError, match="`labels`.*integer"):
        metrics.confusion_matrix(logits, labels.astype(np.float32), C)
    with pytest.raises(ValueError, match="`logits_or_preds`"):
        metrics.confusion_matrix(logits[..., :3], labels, C)
    with pytest.raises(ValueError, match="num_classes=2"):
        metrics.confusion_matrix(logits[..., 0], labels, C)
    with pytest.raises(ValueError, match="`num_classes`"):
        metrics.confusion_matrix(logits, labels, 1)
    with pytest.raises(ValueError, match="`where`"):
        metrics.confusion_matrix(logits, labels, C, where=np.ones((3, 5)))


# ------------------------------------------------------------------- per-class metrics


def test_per_class_metrics_hand_values_and_eqs_7_8():
    cm = np.array([[50, 2, 3, 0], [4, 20, 0, 1], [0, 0, 0, 0], [1, 0, 2, 7]])
    m = metrics.per_class_metrics(cm)
    # class 0: TP 50, FP 4 + 0 + 1 = 5, FN 2 + 3 = 5; class 1: TP 20, FP 2, FN 5
    np.testing.assert_allclose(m["iou"][:2], [50 / 60, 20 / 27], rtol=1e-6)
    np.testing.assert_allclose(m["precision"][:2], [50 / 55, 20 / 22], rtol=1e-6)
    np.testing.assert_allclose(m["recall"][:2], [50 / 55, 20 / 25], rtol=1e-6)
    # OII of each class is the binary OII of its one-vs-rest counts
    c = metrics.class_counts(cm)
    np.testing.assert_allclose(m["oii"], jax.jit(metrics.oii)(c.tp, c.fp, c.fn), rtol=1e-6)
    assert float(m["oii"][0]) == 0.0  # FP = FN
    assert float(m["oii"][1]) > 0  # more misses (5) than false alarms (2): under-segmented
    assert float(m["oii"][2]) < 0  # class 2 never labelled, predicted 5 times
    # Eq. 7 over classes that occur (all four do); Eq. 8 over classes with labels (not 2)
    iou = [50 / 60, 20 / 27, 0 / 5, 7 / 11]
    np.testing.assert_allclose(metrics.mean_iou(cm), np.mean(iou), rtol=1e-6)
    np.testing.assert_allclose(
        metrics.mean_accuracy(cm), np.mean([50 / 55, 20 / 25, 7 / 10]), rtol=1e-6
    )
    np.testing.assert_allclose(
        metrics.mean_iou(cm, include_background=False), np.mean(iou[1:]), rtol=1e-6
    )
    # a class absent from labels and predictions does not count
    cm5 = np.zeros((5, 5), int)
    cm5[:4, :4] = cm
    np.testing.assert_allclose(metrics.mean_iou(cm5), np.mean(iou), rtol=1e-6)
    assert np.isnan(float(metrics.mean_iou(np.zeros((3, 3), int))))


def test_multiclass_summary_and_accumulator():
    logits, labels = _data(4)
    acc = metrics.ConfusionMatrixAccumulator(C)
    for i in range(3):
        acc.update(metrics.confusion_matrix(logits[i : i + 1], labels[i : i + 1], C))
    cm = acc.result()
    np.testing.assert_array_equal(cm, metrics.confusion_matrix(logits, labels, C).sum(0))
    s = metrics.multiclass_summary(cm, class_names=["bg", "a", "b", "c"])
    m = metrics.per_class_metrics(cm)
    assert s["miou"] == pytest.approx(float(metrics.mean_iou(cm)), rel=1e-6)
    assert s["macc"] == pytest.approx(float(metrics.mean_accuracy(cm)), rel=1e-6)
    assert s["oii"] == pytest.approx(np.asarray(m["oii"]).tolist(), rel=1e-6)
    assert s["macro_oii"] == pytest.approx(float(np.mean(m["oii"])), rel=1e-5, abs=1e-7)
    assert s["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert s["per_class"]["a"]["iou"] == s["iou"][1]
    assert s["support"] == cm.sum(1).tolist()
    # summed over classes, false alarms equal misses: a micro OII would always be 0
    c = metrics.class_counts(cm)
    assert int(c.fp.sum()) == int(c.fn.sum())
    no_bg = metrics.multiclass_summary(cm, include_background=False)
    assert no_bg["miou"] == pytest.approx(float(np.mean(m["iou"][1:])), rel=1e-6)


# -------------------------------------------------------------------------------- ranking


def _auc_pairs(s, y):
    pos, neg = s[y > 0], s[y == 0]
    wins = sum(float(a > b) + 0.5 * float(a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=15, deadline=None)
@given(
    s=hnp.arrays(np.float32, (24,), elements=st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0])),
    y=hnp.arrays(np.int32, (24,), elements=st.integers(0, 1)),
)
def test_roc_auc_matches_pairwise_count(s, y):
    """Exact AUC and the binned AUC (one value per bin, ties included) against all pairs."""
    if 0 < y.sum() < y.size:
        want = _auc_pairs(s, y)
        assert float(metrics.roc_auc(s, y)) == pytest.approx(want, abs=1e-6)
        h = metrics.score_histograms(s, y, num_bins=11, value_range=(-2.25, 3.25))
        assert metrics.roc_auc_from_histograms(h) == pytest.approx(want, abs=1e-12)
    else:
        assert np.isnan(float(metrics.roc_auc(s, y)))
        assert (
            metrics.roc_auc_from_histograms(metrics.score_histograms(s, y), zero_division=0.5)
            == 0.5
        )


def test_roc_auc_masks_shapes_and_accumulation():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(4, 50)).astype(np.float32)
    y = (rng.random((4, 50)) < 0.2 + 0.3 * (s > 0)).astype(np.int32)
    mask = rng.random((4, 50)) < 0.8
    want = _auc_pairs(s[mask], y[mask])
    assert float(metrics.roc_auc(s, y, where=mask)) == pytest.approx(want, abs=1e-6)
    # histograms are additive: per-batch histograms sum to the histogram of everything
    hs = [metrics.score_histograms(s[i], y[i], where=mask[i]) for i in range(4)]
    total = hs[0] + hs[1] + hs[2] + hs[3]
    np.testing.assert_array_equal(total.pos, metrics.score_histograms(s, y, where=mask).pos)
    # continuous scores in 2048 bins of width 1/64: within a bin, ties count one half
    assert metrics.roc_auc_from_histograms(total) == pytest.approx(want, abs=2e-3)
    stacked = metrics.ScoreHistogram(*(jnp.stack(v) for v in zip(*hs, strict=True)))
    assert metrics.roc_auc_from_histograms(stacked.sum()) == metrics.roc_auc_from_histograms(total)
    with pytest.raises(ValueError, match="`labels`"):
        metrics.roc_auc(s, y[:, :3])
    with pytest.raises(ValueError, match="`value_range`"):
        metrics.score_histograms(s, y, value_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="`num_bins`"):
        metrics.score_histograms(s, y, num_bins=0)


def test_g_mean_at_reuses_binary_counts():
    z = np.array([[2.0, -1.0, 0.5, -3.0, 1.0, -0.2]], np.float32)
    y = np.array([[1, 1, 0, 0, 1, 0]])
    # TP 2, FN 1, FP 1, TN 2: sqrt(2/3 · 2/3)
    assert float(metrics.g_mean_at(z, y)) == pytest.approx(2 / 3, rel=1e-6)
    # threshold 0.7: TP 2, FN 1, FP 0, TN 3
    assert float(metrics.g_mean_at(z, y, threshold=0.7)) == pytest.approx(np.sqrt(2 / 3), rel=1e-6)
