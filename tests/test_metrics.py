import json
import math

import pandas as pd
import pytest

from sers.errors import SersError
from sers.metrics import (
    base_scores,
    check_complete,
    compute_metrics,
    method_table,
    score_matrix,
    to_markdown_table,
    write_table_csv,
)

ORDER = ["A", "B", "C"]
# a[t][j]: row = model after stage t, column = task j.
#            A    B    C
# stage1    80   10   20
# stage2    60   70   30
# stage3    50   65   90
# base θ0    5   12   25
A = {1: {"A": 80, "B": 10, "C": 20}, 2: {"A": 60, "B": 70, "C": 30}, 3: {"A": 50, "B": 65, "C": 90}}
BASE = {"A": 5, "B": 12, "C": 25}


def summaries(matrix=A, base=BASE, se=3.0, base_se=4.0, order=ORDER, skip=(), method="sers", order_name="order1"):
    out = []
    for t, row in matrix.items():
        for j, v in row.items():
            if (t, j) not in skip:
                out.append({"order": order_name, "method": method, "stage": t, "stage_task": order[t - 1], "task": j,
                            "n_rows": 50, "rouge_l_mean": float(v), "rouge_l_se": se})
    for j, v in (base or {}).items():
        out.append({"order": order_name, "method": method, "stage": 0, "stage_task": "base", "task": j,
                    "n_rows": 50, "rouge_l_mean": float(v), "rouge_l_se": base_se})
    return out


def test_score_matrix_and_base():
    m = score_matrix(summaries(), ORDER)
    assert list(m.index) == ["stage1-A", "stage2-B", "stage3-C"]
    assert list(m.columns) == ORDER
    assert m.loc["stage2-B", "A"] == 60
    assert base_scores(summaries(), ORDER) == {"A": 5, "B": 12, "C": 25}
    assert base_scores(summaries(base=None), ORDER) is None
    lower = [s for s in summaries() if s["stage"] == 0 or ORDER.index(s["task"]) < s["stage"]]
    assert math.isnan(score_matrix(lower, ORDER).loc["stage1-A", "B"])


def test_hand_computed_metrics():
    r = compute_metrics(summaries(), ORDER)
    # AR = (50 + 65 + 90) / 3 = 205/3
    assert r["ar"] == pytest.approx(205 / 3)
    # BWT = ((50 − 80) + (65 − 70)) / 2 = (−30 − 5) / 2 = −17.5
    assert r["bwt"] == pytest.approx(-17.5)
    # FWT = ((a1[B] − b[B]) + (a2[C] − b[C])) / 2 = ((10 − 12) + (30 − 25)) / 2 = 1.5
    assert r["fwt"] == pytest.approx(1.5)
    # forgetting A = max(80, 60) − 50 = 30; B = max(70) − 65 = 5; the last task has none
    assert r["forgetting"] == pytest.approx({"A": 30.0, "B": 5.0})
    # SEs (cell SE 3, base SE 4): AR sqrt(3·9)/3 = sqrt(3); BWT sqrt(4·9)/2 = 3; FWT sqrt(2·(9+16))/2
    assert r["ar_se"] == pytest.approx(math.sqrt(3))
    assert r["bwt_se"] == pytest.approx(3.0)
    assert r["fwt_se"] == pytest.approx(math.sqrt(50) / 2)
    assert r["n_tasks"] == 3 and r["order"] == "order1" and r["method"] == "sers"
    json.dumps(r)  # JSON-serialisable


def test_forgetting_ignores_scores_before_the_task_was_learnt():
    matrix = {t: dict(row) for t, row in A.items()}
    matrix[1]["B"] = 99  # θ1 on B, before B was trained: affects FWT, not forgetting
    r = compute_metrics(summaries(matrix=matrix), ORDER)
    assert r["forgetting"]["B"] == pytest.approx(5.0)
    assert r["fwt"] == pytest.approx(((99 - 12) + (30 - 25)) / 2)


def test_fwt_none_without_base_or_upper_triangle():
    assert compute_metrics(summaries(base=None), ORDER)["fwt"] is None
    r = compute_metrics(summaries(skip={(2, "C")}), ORDER)
    assert r["fwt"] is None and r["fwt_se"] is None
    assert r["bwt"] == pytest.approx(-17.5)


def test_missing_evaluation_names_stage_and_task():
    with pytest.raises(SersError, match=r"stage 2 \[stage2-B\], task A"):
        compute_metrics(summaries(skip={(2, "A")}), ORDER)
    with pytest.raises(SersError, match=r"stage 1 \[stage1-A\], task C"):
        check_complete(summaries(skip={(1, "C")}), ORDER, need_all=True)
    check_complete(summaries(skip={(1, "C")}), ORDER, need_all=False)
    with pytest.raises(SersError, match=r"stage 0 \[base\], task B"):
        check_complete([s for s in summaries() if not (s["stage"] == 0 and s["task"] == "B")], ORDER,
                       need_all=True, need_base=True)


def test_inconsistent_summaries_raise():
    bad = summaries()
    bad[0] = dict(bad[0], stage_task="C", path="evals/x.json")
    with pytest.raises(SersError, match="evals/x.json"):
        compute_metrics(bad, ORDER)
    with pytest.raises(SersError, match="second evaluation"):
        compute_metrics(summaries() + summaries()[:1], ORDER)
    with pytest.raises(SersError, match="rouge_l_mean"):
        compute_metrics([{k: v for k, v in s.items() if k != "rouge_l_mean"} for s in summaries()], ORDER)
    with pytest.raises(SersError, match="mix"):
        compute_metrics(summaries() + summaries(method="replay"), ORDER)


def test_single_task_order():
    s = summaries(matrix={1: {"A": 42}}, base={"A": 3}, order=["A"])
    r = compute_metrics(s, ["A"])
    assert r["ar"] == pytest.approx(42) and r["ar_se"] == pytest.approx(3.0)
    assert r["bwt"] is None and r["fwt"] is None and r["forgetting"] == {} and r["n_tasks"] == 1


def test_missing_se_gives_none():
    s = summaries()
    for x in s:
        x["rouge_l_se"] = None
    r = compute_metrics(s, ORDER)
    assert r["ar"] == pytest.approx(205 / 3) and r["ar_se"] is None and r["bwt_se"] is None


def test_method_table_markdown_and_csv(tmp_path):
    m1 = compute_metrics(summaries(), ORDER)
    shifted = {t: {j: v + 2 for j, v in row.items()} for t, row in A.items()}
    m2 = compute_metrics(summaries(matrix=shifted, order_name="order2"), ORDER)
    one_task = compute_metrics(summaries(matrix={1: {"A": 10}}, base=None, order=["A"], method="replay"), ["A"])
    table = {"order1": {"sers": m1, "replay": one_task}, "order2": {"sers": m2}}
    df = method_table(table)
    assert list(df.columns) == ["method", "order", "AR ± SE", "BWT ± SE", "FWT"]
    mean = df[(df.method == "sers") & (df.order == "mean")].iloc[0]
    # mean AR = (205/3 + 211/3) / 2 = 69.33; SE = sqrt(3 + 3) / 2 = 1.22
    assert mean["AR ± SE"] == "69.33 ± 1.22"
    assert df[(df.method == "replay") & (df.order == "order1")].iloc[0]["BWT ± SE"] == "—"
    num = method_table(table, numeric=True)
    row = num[(num.method == "sers") & (num.order == "mean")].iloc[0]
    assert row["ar"] == pytest.approx((205 / 3 + 211 / 3) / 2) and row["n_orders"] == 2
    # order2: base unchanged, a[i−1][i] shifted by 2 → FWT 3.5; mean over orders (1.5 + 3.5) / 2
    assert row["fwt"] == pytest.approx(2.5)
    assert len(num) == 5  # 3 (order, method) rows + a mean row per method (replay: from one order)
    md = to_markdown_table(df)
    lines = md.strip().split("\n")
    assert lines[0] == "| method | order | AR ± SE | BWT ± SE | FWT |"
    assert lines[1] == "|---|---|---|---|---|"
    assert len(lines) == 2 + len(df)
    # sers mean: BWT −17.5 for both orders, SE sqrt(3² + 3²)/2 = 2.12; FWT SE per order sqrt(50)/2,
    # combined sqrt(2 · 50/4)/2 = 2.5
    assert "| sers | mean | 69.33 ± 1.22 | -17.50 ± 2.12 | 2.50 ± 2.50 |" in lines
    out = tmp_path / "t.csv"
    write_table_csv(num, out)
    back = pd.read_csv(out)
    assert list(back.columns) == list(num.columns) and len(back) == len(num)


def test_markdown_escapes_and_index():
    df = pd.DataFrame({"a|b": [1.234, float("nan")], "c": ["x|y", None]}, index=pd.Index(["r1", "r2"], name="stage"))
    md = to_markdown_table(df, index=True)
    assert md.splitlines()[0] == "| stage | a\\|b | c |"
    assert md.splitlines()[2] == "| r1 | 1.23 | x\\|y |"
    assert md.splitlines()[3] == "| r2 |  |  |"
