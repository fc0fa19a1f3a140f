"""Paired statistics on hand-made per-row scores with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sers.comparison import (
    RunScores,
    bwt_interval,
    compare_methods,
    format_difference,
    paired_bwt_se,
    paired_comparison,
    run_scores,
    with_comparison_columns,
)
from sers.errors import SersError

ORDER = ["A", "B"]


def run(final_a, learnt_a, final_b, learnt_b=None) -> RunScores:
    ids = lambda xs: {f"r{i}": float(x) for i, x in enumerate(xs)}  # noqa: E731
    learnt_b = final_b if learnt_b is None else learnt_b
    return RunScores(ORDER, {"A": ids(final_a), "B": ids(final_b)}, {"A": ids(learnt_a), "B": ids(learnt_b)})


def test_bwt_se_comes_from_per_row_differences():
    # d = a[2][A] − a[1][A] = [1, 2, 3, 4]: var (ddof 1) = 5/3, SE = sqrt(5/3 / 4) = 0.6455; n − 1 = 1
    r = run([1, 2, 3, 4], [0, 0, 0, 0], [50, 50, 50, 50])
    assert paired_bwt_se(r) == pytest.approx(math.sqrt(5 / 3 / 4))
    # every row forgets exactly 5 points: the paired SE is 0, although the rows' scores vary widely
    r = run([5, 15, 25, 35], [10, 20, 30, 40], [50, 50, 50, 50])
    assert paired_bwt_se(r) == 0.0


def test_a_constant_gain_is_significant_and_no_gain_is_noise():
    base = run([10, 20, 30, 40, 50], [30, 30, 60, 60, 90], [1, 2, 3, 4, 5])
    better = run([12, 22, 32, 42, 52], [30, 30, 60, 60, 90], [3, 4, 5, 6, 7])  # +2 on every final row
    c = paired_comparison([(better, base)], n_resamples=500, seed=1)
    assert c["ar"]["diff"] == pytest.approx(2.0) and c["ar"]["ci"] == pytest.approx([2.0, 2.0])
    assert c["ar"]["p"] == pytest.approx(1 / 500) and not c["ar"]["within_noise"]
    # BWT: (a_m[2][A] − a_m[1][A]) − (a_b[2][A] − a_b[1][A]) = +2 per row
    assert c["bwt"]["diff"] == pytest.approx(2.0) and c["bwt"]["ci"] == pytest.approx([2.0, 2.0])
    same = paired_comparison([(base, base)], n_resamples=200, seed=1)
    assert same["ar"]["diff"] == 0 and same["ar"]["p"] == 1.0 and same["ar"]["within_noise"]


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 4.0, size=400)  # per-row differences on task A; task B identical for both
    zeros = np.zeros(400)
    m = RunScores(["A"], {"A": {f"r{i}": 50 + x for i, x in enumerate(d)}}, None)
    b = RunScores(["A"], {"A": {f"r{i}": 50 + x for i, x in enumerate(zeros)}}, None)
    c = paired_comparison([(m, b)], n_resamples=4000, seed=3)
    se = d.std() / math.sqrt(len(d))
    lo, hi = c["ar"]["ci"]
    assert c["ar"]["diff"] == pytest.approx(d.mean())
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert c["bwt"] is None  # a multi-task-like run has no "right after learning" scores
    assert "[" in format_difference(c["ar"]) and format_difference(None) == "—"


def test_different_eval_rows_are_refused():
    a = run([1, 2], [1, 2], [1, 2])
    b = RunScores(ORDER, {"A": {"x": 1.0, "y": 2.0}, "B": a.final["B"]}, a.learnt)
    with pytest.raises(SersError, match="different rows"):
        paired_comparison([(a, b)], n_resamples=10)


def test_run_scores_and_pooled_orders():
    preds = lambda xs: [{"id": f"r{i}", "rouge_l": x} for i, x in enumerate(xs)]  # noqa: E731
    cells = [({"stage": 1, "stage_task": "A", "task": "A"}, preds([80, 90])),
             ({"stage": 2, "stage_task": "B", "task": "A"}, preds([70, 60])),
             ({"stage": 2, "stage_task": "B", "task": "B"}, preds([40, 50]))]
    r = run_scores(cells, ORDER)
    assert r.final == {"A": {"r0": 70.0, "r1": 60.0}, "B": {"r0": 40.0, "r1": 50.0}}
    assert r.learnt["A"] == {"r0": 80.0, "r1": 90.0}
    with pytest.raises(SersError, match="no evaluation of stage 2"):
        run_scores(cells[:1], ORDER)
    up = RunScores(ORDER, {t: {k: v + 1 for k, v in s.items()} for t, s in r.final.items()}, r.learnt)
    out = compare_methods({"o1": {"seq": r, "sers": up}, "o2": {"seq": r, "sers": up}}, ["seq", "ssr"],
                          n_resamples=100)
    assert set(out) == {("o1", "sers"), ("o2", "sers"), ("mean", "sers")}
    assert out[("mean", "sers")]["seq"]["ar"]["diff"] == pytest.approx(1.0)


def test_replicates_pool_into_one_row_per_order():
    from sers.metrics import method_table

    m = lambda ar, bwt: {"ar": ar, "ar_se": 1.0, "bwt": bwt, "bwt_se": 1.0, "fwt": None, "fwt_se": None}  # noqa: E731
    by_order = {"o1": {"seq": m(50, -10), "sers": m(60, -4)}, "o1-rep2": {"seq": m(54, -6), "sers": m(62, -2)}}
    table = method_table(by_order, numeric=True, replicate_groups={"o1": ["o1", "o1-rep2"]})
    row = table[(table["order"] == "o1 (mean of 2 replicates)") & (table["method"] == "seq")].iloc[0]
    # mean of 50 and 54 = 52; between-replicate SE = std(50, 54; ddof 1) / √2 = 2.828 / 1.414 = 2
    assert row["ar"] == pytest.approx(52) and row["ar_se"] == pytest.approx(2.0)
    assert row["bwt"] == pytest.approx(-8) and row["bwt_se"] == pytest.approx(2.0)
    base = run([10, 20], [30, 30], [1, 2])
    up = RunScores(ORDER, {t: {k: v + 3 for k, v in c.items()} for t, c in base.final.items()}, base.learnt)
    out = compare_methods({"o1": {"seq": base, "sers": up}, "o1-rep2": {"seq": base, "sers": up}}, ["seq"],
                          n_resamples=50, groups={"o1": ["o1", "o1-rep2"]})
    assert out[("o1 (mean of 2 replicates)", "sers")]["seq"]["n_runs"] == 2
    assert out[("o1 (mean of 2 replicates)", "sers")]["seq"]["ar"]["diff"] == pytest.approx(3.0)


def test_table_gains_the_difference_columns():
    from sers.metrics import method_table

    m = {"ar": 60.0, "ar_se": 1.0, "bwt": -5.0, "bwt_se": 1.0, "fwt": None, "fwt_se": None}
    table = method_table({"o1": {"seq": m, "sers": m}})
    d = {"diff": 1.5, "ci": [0.5, 2.5], "p": 0.01, "within_noise": False}
    comparisons = {("o1", "sers"): {"seq": {"ar": d, "bwt": None}}}
    out = with_comparison_columns(table, comparisons, ["seq", "ssr"])
    assert list(out["ΔAR vs seq [95% CI], p"]) == ["—", "+1.50 [+0.50, +2.50], p 0.01"]
    assert "ΔAR vs ssr [95% CI], p" not in out  # a baseline that is not among the methods adds no column
    numeric = with_comparison_columns(method_table({"o1": {"seq": m, "sers": m}}, numeric=True), comparisons,
                                      ["seq"], numeric=True)
    lo = list(numeric["d_ar_vs_seq_lo"])
    assert math.isnan(lo[0]) and lo[1] == 0.5


def test_resampling_replicates_widens_the_interval_when_seeds_disagree():
    # every row gains exactly +6 in replicate 1 and 0 in replicate 2: the rows alone say "+3, decisive";
    # with the replicates resampled the interval spans both seeds' results, [0, +6]
    base = run([10, 20, 30, 40], [30, 30, 60, 60], [1, 2, 3, 4])
    up = RunScores(ORDER, {t: {k: v + 6 for k, v in c.items()} for t, c in base.final.items()}, base.learnt)
    pairs = [(up, base), (base, base)]
    rows_only = paired_comparison(pairs, n_resamples=400, seed=2)
    both = paired_comparison(pairs, n_resamples=400, seed=2, resample_runs=True)
    assert rows_only["ar"]["diff"] == both["ar"]["diff"] == pytest.approx(3.0)
    assert rows_only["ar"]["ci"] == pytest.approx([3.0, 3.0]) and not rows_only["resample_runs"]
    assert both["ar"]["ci"] == pytest.approx([0.0, 6.0]) and both["ar"]["within_noise"] and both["resample_runs"]
    groups = {"o1": ["o1", "o1-rep2"]}
    out = compare_methods({"o1": {"seq": base, "sers": up}, "o1-rep2": {"seq": base, "sers": base}}, ["seq"],
                          n_resamples=400, seed=2, groups=groups)
    assert out[("o1 (mean of 2 replicates)", "sers")]["seq"]["ar"]["within_noise"]
    out = compare_methods({"o1": {"seq": base, "sers": up}, "o1-rep2": {"seq": base, "sers": base}}, ["seq"],
                          n_resamples=400, seed=2, groups=groups, resample_replicates=False)
    assert not out[("o1 (mean of 2 replicates)", "sers")]["seq"]["ar"]["within_noise"]


def test_bwt_interval_is_the_bwt_with_a_two_level_interval():
    """Two replicates forgetting 10 and 2 points on every row: BWT −6, interval spanning the two; one
    replicate forgetting 0 on every row: 0, within noise; a run without BWT (mtl): None."""
    def run(drop: float, learnt: bool = True) -> RunScores:
        rows = {f"r{i}": 80.0 for i in range(6)}
        return RunScores(order=["a", "b"], final={"a": {k: v - drop for k, v in rows.items()}, "b": rows},
                         learnt={"a": rows, "b": rows} if learnt else None)
    d = bwt_interval([run(10), run(2)], n_resamples=400, seed=0)
    assert d["diff"] == pytest.approx(-6.0) and d["ci"] == pytest.approx([-10.0, -2.0])
    assert not d["within_noise"]
    assert bwt_interval([run(0)], n_resamples=50)["within_noise"]
    assert bwt_interval([run(0, learnt=False)]) is None
