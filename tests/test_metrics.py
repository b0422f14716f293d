"""Metrics: Table 1 of the paper, OII edge cases and properties, additive counts."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dibe_jax import metrics

# Table 1 of the DIBE paper: TP:FP:FN, FP/FN, IoU, PA, OII
TABLE_1 = [
    ((2, 0.5, 0.5), 1, 0.667, 0.800, 0.000),
    ((2, 1, 1), 1, 0.500, 0.667, 0.000),
    ((2, 3, 3), 1, 0.250, 0.400, 0.000),
    ((2, 5, 1), 5, 0.250, 0.286, -0.667),
    ((2, 4, 2), 2, 0.250, 0.333, -0.292),
    ((2, 2, 4), 0.5, 0.250, 0.500, 0.292),
    ((2, 1, 5), 0.2, 0.250, 0.667, 0.667),
    ((2, 1, 2), 0.5, 0.400, 0.667, 0.267),
    ((2, 1, 0.5), 2, 0.571, 0.667, -0.238),
    ((2, 1, 0.2), 5, 0.625, 0.667, -0.524),
]


def test_table_1_to_three_decimals():
    tp, fp, fn = (np.array(c, np.float32) for c in zip(*[row[0] for row in TABLE_1], strict=True))
    got = {
        "x": metrics.fp_fn_ratio(fp, fn),
        "iou": metrics.iou(tp, fp, fn),
        "pa": metrics.pa(tp, fp),
        "oii": metrics.oii(tp, fp, fn),
    }
    for i, (_, x, iou, pa, oii) in enumerate(TABLE_1):
        assert round(float(got["x"][i]), 3) == x
        assert round(float(got["iou"][i]), 3) == iou
        assert round(float(got["pa"][i]), 3) == pa
        assert round(float(got["oii"][i]), 3) + 0.0 == oii, i  # + 0.0: -0.0 == 0.0


def _oii_eq15(tp, fp, fn):
    """Eqs. 15-17 as printed (piecewise in x = FP/FN), for FP, FN > 0."""
    x = fp / fn
    k = 1 - tp / (tp + fp + fn) / 2
    inv = 1 / (x + 1 / x - 1)
    return k * (1 - inv) if x <= 1 else k * (inv - 1)


@settings(max_examples=50, deadline=None)
@given(
    st.floats(0, 1e6),
    st.floats(1e-3, 1e6),
    st.floats(1e-3, 1e6),
)
def test_oii_equals_piecewise_form_and_is_bounded(tp, fp, fn):
    with jax.enable_x64(True):
        got = float(metrics.oii(np.float64(tp), np.float64(fp), np.float64(fn)))
    assert got == pytest.approx(_oii_eq15(tp, fp, fn), rel=1e-9, abs=1e-12)
    assert -1 < got < 1
    # symmetric and directional (Eq. 13): swapping FP and FN flips the sign
    with jax.enable_x64(True):
        swapped = float(metrics.oii(np.float64(tp), np.float64(fn), np.float64(fp)))
    assert swapped == pytest.approx(-got, rel=1e-9, abs=1e-12)


def test_oii_edge_cases():
    # FP = FN = 0 -> 0; FP = 0 < FN -> +k; FN = 0 < FP -> -k (Eqs. 15-17)
    np.testing.assert_allclose(metrics.oii(5, 0, 0), 0.0)
    np.testing.assert_allclose(metrics.oii(0, 0, 0), 0.0)
    np.testing.assert_allclose(metrics.oii(2, 0, 2), 1 - 0.5 / 2)
    np.testing.assert_allclose(metrics.oii(2, 6, 0), -(1 - 0.25 / 2))
    np.testing.assert_allclose(metrics.oii(0, 0, 7), 1.0)
    # huge integer counts neither overflow nor lose the sign
    big = metrics.oii(np.int32(2_000_000_000), np.int32(2_100_000_000), np.int32(1))
    assert -1 < float(big) < 0
    assert float(metrics.oii(10**6, 10**6, 10**6 + 1)) > 0


def test_zero_division_and_ratios():
    assert float(metrics.iou(0, 0, 0)) == 1.0
    assert float(metrics.iou(0, 0, 0, zero_division=0.0)) == 0.0
    assert float(metrics.precision(0, 0)) == 1.0
    assert float(metrics.recall(0, 3)) == 0.0
    assert float(metrics.fp_fn_ratio(0, 0)) == 1.0
    assert float(metrics.fp_fn_ratio(2, 0)) == np.inf
    assert float(metrics.dice_score(2, 1, 1)) == pytest.approx(2 / 3)
    assert float(metrics.specificity(3, 1)) == 0.75
    assert float(metrics.g_mean(1, 1, 3, 3)) == pytest.approx(np.sqrt(0.25 * 0.75))


def test_confusion_counts_and_accumulation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 5, 7, 1)).astype(np.float32)
    y = rng.random((6, 5, 7, 1)) < 0.2
    c = metrics.confusion_counts(z, y)
    pred = z >= 0
    np.testing.assert_array_equal(c.tp, (pred & y).sum(axis=(1, 2, 3)))
    np.testing.assert_array_equal(c.fp, (pred & ~y).sum(axis=(1, 2, 3)))
    np.testing.assert_array_equal(c.fn, (~pred & y).sum(axis=(1, 2, 3)))
    np.testing.assert_array_equal(c.tn, (~pred & ~y).sum(axis=(1, 2, 3)))
    assert c.tp.dtype == jnp.int32
    acc = metrics.ConfusionAccumulator()
    for i in range(0, 6, 2):  # batches of 2
        acc.update(metrics.confusion_counts(z[i : i + 2], y[i : i + 2]))
    total = acc.result()
    assert total == metrics.Confusion(*(int(np.sum(v)) for v in c))
    assert c.sum() == metrics.Confusion(*(jnp.sum(v) for v in c))
    # summed across a named axis (devices) as well
    per_dev = jax.vmap(
        lambda a, b: metrics.confusion_counts(a, b).sum(axis_name="d"), axis_name="d"
    )(z.reshape(2, 3, 5, 7, 1), y.reshape(2, 3, 5, 7, 1))
    assert [int(v[0]) for v in per_dev] == list(total)


def test_where_and_threshold():
    z = np.array([[2.0, -1.0, 0.0, -3.0]])
    y = np.array([[1, 1, 0, 0]])
    c = metrics.confusion_counts(z, y, where=np.array([[1, 0, 1, 1]]))
    assert [int(v[0]) for v in c] == [1, 1, 0, 1]
    c = metrics.confusion_counts(z, y, threshold=1.0)
    assert [int(v[0]) for v in c] == [1, 0, 1, 2]
    with pytest.raises(ValueError, match="`labels`"):
        metrics.confusion_counts(z, y[:, :2])
    with pytest.raises(ValueError, match="`where`"):
        metrics.confusion_counts(z, y, where=np.ones((1, 3)))


def test_summarize_dataset_and_image_average():
    counts = metrics.Confusion(
        tp=np.array([2, 0]), fp=np.array([1, 0]), fn=np.array([1, 4]), tn=np.array([10, 10])
    )
    micro = metrics.summarize(counts)
    assert micro["iou"] == pytest.approx(2 / 8)
    assert micro["pa"] == micro["precision"] == pytest.approx(2 / 3)
    assert (micro["tp"], micro["fp"], micro["fn"], micro["tn"]) == (2, 1, 5, 20)
    assert micro["oii"] == pytest.approx(float(metrics.oii(2, 1, 5)), rel=1e-6)
    per_image = metrics.summarize(counts, average="image")
    assert per_image["iou"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="`average`"):
        metrics.summarize(counts, average="macro")


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.int32, (4, 3), elements=st.integers(0, 10_000)))
def test_metrics_bounded(counts):
    tp, fp, fn, tn = counts
    for v in (metrics.iou(tp, fp, fn), metrics.pa(tp, fp), metrics.recall(tp, fn)):
        assert np.all((np.asarray(v) >= 0) & (np.asarray(v) <= 1))
    o = np.asarray(metrics.oii(tp, fp, fn))
    # (-1, 1) for FP, FN > 0 (Appendix A); the limits ±k reach ±1 only when IoU = 0
    assert np.all((o >= -1) & (o <= 1))
    assert np.all(np.abs(o[(fp > 0) & (fn > 0)]) < 1)
    assert np.all(np.sign(o) == np.sign(fn - fp))
