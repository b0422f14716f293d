"""Tests of the OII-guided search and the grid baseline (Appendix C and Table 6 of DIBE).

No training: ``train_fn`` is a stub returning the paper's numbers or a synthetic monotone
OII response.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dibe_jax.tuning import SearchError, SearchResult, grid_search, oii_search


def _values(result: SearchResult) -> list[float]:
    return [round(r["value"], 9) for r in result.runs]


def _stub(table: dict[float, dict[str, float]]) -> Callable[[float], dict[str, float]]:
    """train_fn answering from a table keyed by the rounded value; fails on unknown values."""

    def train_fn(value: float) -> dict[str, float]:
        return table[round(value, 6)]

    return train_fn


def _linear(c: float, slope: float, log: list[float] | None = None):
    """Synthetic OII response ``c + slope * value`` (IoU peaks at 0.5 to make ties testable)."""

    def train_fn(value: float) -> dict[str, float]:
        if log is not None:
            log.append(value)
        return {"oii": c + slope * value, "iou": 0.6 - abs(value - 0.5) / 10, "pa": 0.8}

    return train_fn


# --- the paper's worked examples (Appendix C) ----------------------------------------------


def test_paper_example_dibe_dis_segnet():
    # alpha0 = 0.5 gives OII = 0.294 > 0.25, so alpha1 = 0.7 (centre of [alpha0, 0.9]).
    paper = {
        0.5: {"oii": 0.294, "iou": 0.442, "pa": 0.713},
        0.7: {"oii": 0.162, "iou": 0.477, "pa": 0.709},
    }
    result = oii_search(_stub(paper))
    assert _values(result) == [0.5, 0.7]
    assert result.runs_needed == 2 and result.converged and result.stop_reason == "inside"
    assert result.best is result.runs[-1]
    assert result.value == pytest.approx(0.7)
    assert (result.best["iou"], result.best["pa"]) == (0.477, 0.709)
    assert [r["run"] for r in result.runs] == [0, 1]


def test_paper_example_tversky_unet():
    # OII = 0.000 < 0.15: alpha1 = 0.3 (centre of [0.1, alpha0]); 0.022 < 0.15: alpha2 = 0.2
    # (centre of [0.1, alpha1]); 0.228 is inside (0.15, 0.25).
    paper = {
        0.5: {"oii": 0.000, "iou": 0.642, "pa": 0.782},
        0.3: {"oii": 0.022, "iou": 0.642, "pa": 0.798},
        0.2: {"oii": 0.228, "iou": 0.636, "pa": 0.840},
    }
    result = oii_search(_stub(paper))
    assert _values(result) == [0.5, 0.3, 0.2]
    assert result.runs_needed == 3 and result.converged
    assert result.best["pa"] == 0.840


def test_table6_markdown():
    paper_oii = {
        0.5: {"oii": 0.294, "iou": 0.442, "pa": 0.713},
        0.7: {"oii": 0.162, "iou": 0.477, "pa": 0.709},
    }
    # Grid row of Table 6 (DIBE_Dis, SegNet): best alpha = 0.1, IoU 0.481, PA 0.823; the
    # points the paper does not print are filled with lower IoU.
    paper_grid = {
        0.1: {"iou": 0.481, "pa": 0.823},
        0.3: {"iou": 0.460, "pa": 0.760},
        0.5: {"iou": 0.442, "pa": 0.713},
        0.7: {"iou": 0.477, "pa": 0.709},
        0.9: {"iou": 0.450, "pa": 0.650},
    }
    guided = oii_search(_stub(paper_oii))
    grid = grid_search(_stub(paper_grid))
    assert guided.table(grid).splitlines() == [
        "| method | runs | α | IoU | PA | OII |",
        "|---|---:|---:|---:|---:|---:|",
        "| OII guidance | 2 | 0.7 | 0.477 | 0.709 | 0.162 |",
        "| Grid search | 5 | 0.1 | 0.481 | 0.823 | – |",
    ]
    beta = oii_search(_stub(paper_oii), direction=1, max_runs=1, parameter="beta")
    assert beta.table().splitlines()[0] == "| method | runs | β | IoU | PA | OII |"
    assert "(OII not in interval)" in beta.table()


# --- synthetic monotone responses ----------------------------------------------------------


def test_linear_decreasing_response():
    # oii = 0.6 - 0.8 a is inside (0.15, 0.25) for a in (0.4375, 0.5625): the centre hits it.
    assert _values(oii_search(_linear(0.6, -0.8))) == [0.5]
    # oii = 0.9 - 0.8 a: inside for a in (0.8125, 0.9375); 0.5 -> 0.7 -> 0.8 -> 0.85.
    result = oii_search(_linear(0.9, -0.8))
    assert _values(result) == [0.5, 0.7, 0.8, 0.85]
    assert result.converged and result.best["oii"] == pytest.approx(0.22)


def test_linear_increasing_response_with_direction_plus_one():
    # oii = -0.3 + 0.8 b (a beta-like parameter): inside for b in (0.5625, 0.6875).
    result = oii_search(_linear(-0.3, 0.8), direction=1)
    assert _values(result) == [0.5, 0.7, 0.6]
    assert result.converged and result.best["oii"] == pytest.approx(0.18)
    # The wrong direction walks away from the interval and never gets there.
    wrong = oii_search(_linear(-0.3, 0.8), direction=-1)
    assert not wrong.converged and _values(wrong) == [0.5, 0.3, 0.2, 0.15]


@pytest.mark.parametrize("direction", [-1, 1])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_bisection_reaches_every_grid_point_in_m_runs(m, direction):
    # Appendix C: [a, b] divided into 2**m parts; grid search trains 2**m + 1 models, OII
    # guidance at most m. The response is inside the interval only within h/2 of the target.
    lo, hi = 0.1, 0.9
    h = (hi - lo) / 2**m
    for j in range(1, 2**m):
        target = lo + j * h
        calls: list[float] = []
        train_fn = _linear(0.2 - direction * 0.1 / h * target, direction * 0.1 / h, calls)
        result = oii_search(train_fn, bounds=(lo, hi), grid=2**m, direction=direction)
        assert result.converged, (m, j)
        assert result.value == pytest.approx(target)
        assert result.runs_needed == len(calls) <= m
        assert grid_search(train_fn, bounds=(lo, hi), points=2**m + 1).runs_needed == 2**m + 1


def test_resolution_and_grid_agree():
    a = oii_search(_linear(0.9, -0.8), grid=8)
    b = oii_search(_linear(0.9, -0.8), resolution=0.1)
    assert _values(a) == _values(b) == [0.5, 0.7, 0.8]
    assert not a.converged and a.stop_reason == "resolution"
    # Default resolution (hi - lo) / 2**4: at most 4 runs.
    assert oii_search(lambda v: {"oii": 1.0}).runs_needed == 4


def test_max_runs_and_closest_run():
    result = oii_search(_linear(0.9, -0.8), max_runs=2)
    assert _values(result) == [0.5, 0.7]
    assert not result.converged and result.stop_reason == "max_runs"
    assert result.best["value"] == pytest.approx(0.7)  # OII 0.34 is nearer than 0.5


def test_tie_goes_to_higher_iou():
    # OII 0.30 at 0.5 and 0.10 at 0.7: both 0.05 from the interval; 0.7 has higher IoU.
    table = {
        0.5: {"oii": 0.30, "iou": 0.40},
        0.7: {"oii": 0.10, "iou": 0.45},
    }
    result = oii_search(_stub(table), max_runs=2)
    assert not result.converged and result.best["value"] == pytest.approx(0.7)
    table[0.7]["iou"] = 0.35
    assert oii_search(_stub(table), max_runs=2).best["value"] == pytest.approx(0.5)


def test_start_and_no_repeated_values():
    calls: list[float] = []
    # Start at the lower end with OII too low: the lower half is empty, nothing to repeat.
    result = oii_search(_linear(0.0, 0.0, calls), start=0.1)
    assert calls == [0.1] and result.stop_reason == "resolution"
    calls.clear()
    result = oii_search(_linear(0.9, -0.8, calls), start=0.3)
    assert _values(result) == [0.3, 0.6, 0.75, 0.825]
    assert len(set(calls)) == len(calls)


@given(
    st.floats(-2, 2),
    st.floats(0.05, 3),
    st.sampled_from([-1, 1]),
    st.integers(1, 8),
    st.lists(st.floats(-1, 1), min_size=8, max_size=8),
)
def test_runs_bounded_by_grid_depth_for_any_response(lo, width, direction, m, oiis):
    # Whatever OII comes back, resolution (hi - lo) / 2**m allows at most m runs, all on the
    # grid, none repeated.
    hi = lo + width
    answers = iter(oiis)
    result = oii_search(
        lambda v: {"oii": next(answers)}, bounds=(lo, hi), grid=2**m, direction=direction
    )
    assert 1 <= result.runs_needed <= m
    h = width / 2**m
    values = [r["value"] for r in result.runs]
    assert all(abs((v - lo) / h - round((v - lo) / h)) < 1e-6 for v in values)
    assert len(set(values)) == len(values)


@given(
    lo=st.floats(-1, 1),
    width=st.floats(0.01, 10),
    t=st.floats(0, 1),
    log_r=st.floats(-6, 0.5),
    m0=st.floats(-0.9, 0.5),
    m_width=st.floats(0.01, 0.5),
    direction=st.sampled_from([-1, 1]),
)
def test_linear_response_converges_within_log2_bound(lo, width, t, log_r, m0, m_width, direction):
    # OII(v) = mid + direction * s * (v - v*) maps J = (v* - r, v* + r) onto (m0, m1). The
    # bracket always contains J' = J ∩ (lo, hi); a run that misses J' leaves it in a half of
    # width (hi - lo) / 2**k after k misses, so k <= log2((hi - lo) / |J'|) and
    # runs <= floor(log2((hi - lo) / |J'|)) + 1.
    hi = lo + width
    m1 = m0 + m_width
    v_star = lo + t * width
    r = width * 10**log_r
    s = (m1 - m0) / (2 * r)
    mid = (m0 + m1) / 2

    def train_fn(v: float) -> dict[str, float]:
        return {"oii": mid + direction * s * (v - v_star)}

    j_width = min(hi, v_star + r) - max(lo, v_star - r)
    bound = math.floor(math.log2(width / j_width) + 1e-9) + 1
    result = oii_search(
        train_fn,
        interval=(m0, m1),
        bounds=(lo, hi),
        direction=direction,
        resolution=width * 1e-12,
    )
    assert result.converged
    assert m0 < result.best["oii"] < m1
    assert result.runs_needed <= bound


# --- grid search ---------------------------------------------------------------------------


def test_grid_search_points_and_selection():
    seen: list[float] = []

    def train_fn(v: float) -> dict[str, float]:
        seen.append(v)
        return {"iou": 1 - (v - 0.3) ** 2, "pa": v, "oii": 0.5 - v}

    result = grid_search(train_fn)
    assert seen == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert seen[0] == 0.1 and seen[-1] == 0.9  # both ends exactly
    assert result.runs_needed == 5 and result.converged and result.method == "grid_search"
    assert result.value == pytest.approx(0.3)
    assert grid_search(train_fn, select="pa").value == 0.9
    assert grid_search(train_fn, bounds=(0.0, 1.0), points=3).runs_needed == 3


def test_grid_search_skips_nan_and_ties_to_first():
    table = {0.1: {"iou": math.nan}, 0.5: {"iou": 0.6}, 0.9: {"iou": 0.6}}
    assert grid_search(_stub(table), points=3).value == 0.5
    with pytest.raises(ValueError, match="NaN in every run"):
        grid_search(lambda v: {"iou": math.nan}, points=2)


# --- persistence ---------------------------------------------------------------------------


def test_json_round_trip(tmp_path):
    result = oii_search(_linear(0.9, -0.8))
    again = SearchResult.from_json(result.to_json())
    assert again == result
    assert again.best is again.runs[again.best["run"]]
    assert again.settings["bounds"] == (0.1, 0.9)
    path = result.save(tmp_path / "sub" / "search.json")
    assert SearchResult.load(path) == result
    grid = grid_search(_linear(0.9, -0.8))
    assert SearchResult.from_json(grid.to_json()) == grid


def test_json_nan_metric_is_strict_json():
    result = oii_search(lambda v: {"oii": 0.2, "pa": math.nan, "note": "ckpt/a"})
    text = result.to_json()
    assert "NaN" not in text
    again = SearchResult.from_json(text)
    assert math.isnan(again.best["pa"]) and again.best["note"] == "ckpt/a"


def test_atomic_save_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "search.json"
    first = oii_search(_linear(0.6, -0.8))
    first.save(path)
    second = oii_search(_linear(0.9, -0.8))
    second.save(path)  # overwrite
    assert os.listdir(tmp_path) == ["search.json"]
    assert SearchResult.load(path) == second

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        first.save(path)
    assert os.listdir(tmp_path) == ["search.json"]
    assert SearchResult.load(path) == second  # old content intact


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bounds": (0.9, 0.1)}, "bounds"),
        ({"bounds": (0.5, 0.5)}, "bounds"),
        ({"bounds": (0.1, math.nan)}, "bounds"),
        ({"interval": (0.25, 0.15)}, "interval"),
        ({"interval": (0.2, 0.2)}, "interval"),
        ({"direction": 0}, "direction"),
        ({"direction": 2}, "direction"),
        ({"max_runs": 0}, "max_runs"),
        ({"resolution": 0.0}, "resolution"),
        ({"resolution": -0.1}, "resolution"),
        ({"grid": 0}, "grid"),
        ({"start": 0.95}, "start"),
    ],
)
def test_oii_search_invalid_arguments(kwargs, name):
    calls: list[float] = []
    with pytest.raises(ValueError, match=name):
        oii_search(_linear(0.6, -0.8, calls), **kwargs)
    assert calls == []  # checked before any training


def test_grid_search_invalid_arguments():
    with pytest.raises(ValueError, match="bounds"):
        grid_search(_linear(0.6, -0.8), bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="points"):
        grid_search(_linear(0.6, -0.8), points=1)
    with pytest.raises(ValueError, match="'pa'"):
        grid_search(lambda v: {"iou": 0.5}, select="pa")


def test_missing_oii_key():
    with pytest.raises(ValueError, match="'oii'"):
        oii_search(lambda v: {"iou": 0.5, "pa": 0.7})


def test_nan_oii_stops_and_keeps_partial_runs():
    table = {0.5: {"oii": 0.4, "iou": 0.5}, 0.7: {"oii": math.nan, "iou": 0.0}}
    with pytest.raises(
        SearchError, match=r"oii=nan.*alpha=0\.7.*diverged, or .* undefined"
    ) as info:
        oii_search(_stub(table))
    assert isinstance(info.value, ValueError)
    partial = info.value.partial
    assert _values(partial) == [0.5, 0.7] and not partial.converged
    assert partial.best["value"] == 0.5  # the finite run, not the NaN one


def test_bad_train_fn_results():
    with pytest.raises(ValueError, match="reserved key 'value'"):
        oii_search(lambda v: {"oii": 0.2, "value": v})
    with pytest.raises(ValueError, match="mapping"):
        oii_search(lambda v: 0.2)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="'iou'"):
        oii_search(lambda v: {"oii": 0.2, "iou": [1, 2]})


# ------------------------------------------------- the search on trainings (tuning.training)


def test_importing_tuning_loads_no_training_code():
    import subprocess
    import sys

    code = "import sys, dibe_jax.tuning; print('dibe_jax.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]  # the search itself is pure


def test_plan_search_rules_and_refusals():
    from dibe_jax import train
    from dibe_jax.errors import ConfigError
    from dibe_jax.tuning import plan_search

    base = train.override(train.Config(), {"loss.name": "tversky"})
    plan = plan_search(base, seeds=2)
    assert (plan.direction, plan.steer, plan.seeds, plan.bounds) == (-1, "oii", (0, 1), (0.1, 0.9))
    assert plan.config(0.2).loss.params == {"alpha": 0.2, "beta": 0.8}  # beta = 1 - alpha
    beta = plan_search(base, param="beta", fixed={"alpha": 0.4})
    assert beta.direction == 1 and beta.config(0.7).loss.params == {"beta": 0.7, "alpha": 0.4}
    assert base.loss.params == {}  # the base is never changed
    refusals = [
        (dict(param="gamma"), "--param: expected one of alpha, beta, got 'gamma'"),
        (dict(bounds=(0.9, 0.1)), "--bounds: expected two finite numbers LO HI"),
        (dict(interval=(0.2, float("nan"))), "--interval: expected two finite numbers M0 M1"),
        (dict(seeds=0), "--seeds: expected an integer >= 1, got 0"),
        (dict(grid=0), "--grid: expected an integer >= 1, got 0"),
        (dict(fixed={"alpha": 0.3}), "--alpha: it is the searched hyperparameter"),
        (dict(bounds=(0.1, 1.5)), "loss.params of 'tversky'"),  # the far end checked too
        (dict(steer="crack"), "--steer: 'crack': a binary dataset"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(ConfigError, match=re.escape(message)):
            plan_search(base, **kwargs)
    with pytest.raises(ConfigError, match="--param: loss 'dice' takes no hyperparameter"):
        plan_search(train.override(train.Config(), {"loss.name": "dice"}))
    with pytest.raises(ConfigError, match="loss.name: unknown loss 'dicee'"):
        plan_search(train.override(train.Config(), {"loss.name": "dicee"}))


def test_run_search_trains_each_value_once_per_seed_and_saves(tmp_path, monkeypatch):
    from dibe_jax import train
    from dibe_jax.train import runs
    from dibe_jax.tuning import SearchResult, plan_search, run_search

    calls = []

    def fake_train_seeds(config, workdir, seeds, **kwargs):
        a = config.loss.params["alpha"]
        calls.append((a, workdir.relative_to(tmp_path).as_posix(), tuple(seeds)))
        recs = [[{"epoch": 1, "oii": 0.5 - a, "iou": a, "pa": 0.5}] for _ in seeds]
        return runs.SeedRuns(recs, list(seeds), 1.0)

    monkeypatch.setattr(runs, "train_seeds", fake_train_seeds)
    plan = plan_search(train.override(train.Config(), {"loss.name": "tversky"}), seeds=2, grid=4)
    guided, grid = run_search(plan, tmp_path, log=None)
    assert guided.value == pytest.approx(0.3) and guided.converged  # OII 0.2 at alpha 0.3
    assert grid is not None and grid.runs_needed == 5
    assert calls[0] == (0.5, "runs/alpha=0.5", (0, 1))
    assert SearchResult.load(tmp_path / "oii_search.json").value == guided.value
    assert SearchResult.load(tmp_path / "grid_search.json").runs_needed == 5
