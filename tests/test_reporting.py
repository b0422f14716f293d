"""The run's printed report (dibe_jax.train.reporting)."""

from __future__ import annotations


def test_eval_table_is_rounded():
    from dibe_jax.train import reporting

    out = {
        "iou": 0.123456789,
        "pa": 0.5,
        "recall": 0.25,
        "oii": -0.3333333,
        "fp_fn_ratio": 2.0,
        "val_loss": 1.23456,
        "tp": 1234,
        "fp": 5,
        "fn": 6,
        "tn": 1000000,
    }
    table = reporting.eval_table(out)
    assert "0.1235" in table and "-0.3333" in table and "1,000,000" in table
    assert "0.123456789" not in table
