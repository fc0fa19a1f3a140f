"""Continual-learning metrics over the stage × task ROUGE-L matrix (METHOD.md §7).

Input is one summary dict per evaluation (model after stage t, eval split of task j)::

    {"order": "order1", "method": "sers", "stage": 1, "stage_task": "sa", "task": "pe",
     "n_rows": 50, "rouge_l_mean": 43.2, "rouge_l_se": 3.1}

`stage` is the 1-based position in the order and `stage_task` the task trained at that stage;
stage 0 with stage_task "base" is θ0, the base model (b[i] for FWT). An optional "path" key
(the summary file) is used in error messages. a[t][j] below is `rouge_l_mean` of stage t on
the j-th task of the order.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from sers.errors import SersError
from sers.io import atomic_path

BASE_STAGE = 0
BASE_TASK = "base"
_REQUIRED = ("stage", "stage_task", "task", "rouge_l_mean")


def _where(s: Mapping[str, Any]) -> str:
    if s.get("path"):
        return str(s["path"])
    return f"summary(order={s.get('order')!r}, method={s.get('method')!r}, stage={s.get('stage')!r}, task={s.get('task')!r})"


def _cells(summaries: Iterable[Mapping[str, Any]], order: Sequence[str]) -> dict[tuple[int, str], Mapping[str, Any]]:
    """Validate summaries against `order`; map (stage, task) -> summary (stage 0 = base)."""
    if not order:
        raise SersError("metrics: the task order is empty")
    if len(set(order)) != len(order):
        raise SersError(f"metrics: the task order {list(order)} repeats a task")
    cells: dict[tuple[int, str], Mapping[str, Any]] = {}
    runs: set[tuple[Any, Any]] = set()
    for s in summaries:
        for key in _REQUIRED:
            if key not in s:
                raise SersError(f"{_where(s)}: evaluation summary lacks the key {key!r}")
        stage, task = s["stage"], s["task"]
        if isinstance(stage, bool) or not isinstance(stage, (int, np.integer)) or not 0 <= stage <= len(order):
            raise SersError(f"{_where(s)}: stage {stage!r} is not an integer in 0..{len(order)}"
                            f" for order {list(order)}")
        stage = int(stage)
        expected = BASE_TASK if stage == BASE_STAGE else order[stage - 1]
        if s["stage_task"] != expected:
            raise SersError(f"{_where(s)}: stage {stage} has stage_task {s['stage_task']!r},"
                            f" but the order {list(order)} says {expected!r}")
        if task not in order:
            raise SersError(f"{_where(s)}: evaluated task {task!r} is not in the order {list(order)}")
        runs.add((s.get("order"), s.get("method")))
        if len(runs) > 1:
            raise SersError(f"{_where(s)}: summaries mix several (order, method) runs {sorted(map(str, runs))};"
                            " pass one run at a time")
        if (stage, task) in cells:
            raise SersError(f"{_where(s)}: a second evaluation of stage {stage} on task {task!r}"
                            f" (first: {_where(cells[(stage, task)])})")
        cells[(stage, task)] = s
    return cells


def _value(s: Mapping[str, Any] | None, field: str) -> float:
    if s is None or s.get(field) is None:
        return math.nan
    try:
        return float(s[field])
    except (TypeError, ValueError):
        raise SersError(f"{_where(s)}: {field} = {s[field]!r} is not a number") from None


def stage_label(stage: int, task: str) -> str:
    """Row label of stage `stage` (trained on `task`) in the score matrix."""
    return f"stage{stage}-{task}"


def score_matrix(summaries: Iterable[Mapping[str, Any]], order: Sequence[str], field: str = "rouge_l_mean") -> pd.DataFrame:
    """Stage × task matrix of `field` (rows "stage{t}-{task}", t = 1..n; columns = order); NaN where not evaluated.

    Pass field="rouge_l_se" for the matching standard-error matrix. The base model is not a row:
    see `base_scores`.
    """
    cells = _cells(summaries, order)
    data = [[_value(cells.get((t, j)), field) for j in order] for t in range(1, len(order) + 1)]
    index = [stage_label(t, order[t - 1]) for t in range(1, len(order) + 1)]
    return pd.DataFrame(data, index=pd.Index(index, name="stage"), columns=pd.Index(list(order), name="task"), dtype=float)


def base_scores(summaries: Iterable[Mapping[str, Any]], order: Sequence[str], field: str = "rouge_l_mean") -> dict[str, float] | None:
    """θ0's `field` per evaluated task ({task: value}), or None if the base model was not evaluated."""
    cells = _cells(summaries, order)
    base = {j: _value(cells[(BASE_STAGE, j)], field) for j in order if (BASE_STAGE, j) in cells}
    return base or None


def missing_cells(summaries: Iterable[Mapping[str, Any]], order: Sequence[str], need_all: bool = False, need_base: bool = False) -> list[tuple[int, str]]:
    """The (stage, task) pairs not evaluated: j ≤ t always, every j if `need_all`, stage 0 if `need_base`."""
    cells = _cells(summaries, order)
    n = len(order)
    wanted = [(t, order[j]) for t in range(1, n + 1) for j in range(n) if need_all or j < t]
    if need_base:
        wanted = [(BASE_STAGE, j) for j in order] + wanted
    return [c for c in wanted if c not in cells]


def check_complete(summaries: Iterable[Mapping[str, Any]], order: Sequence[str], need_all: bool, need_base: bool = False) -> None:
    """Raise SersError naming every missing (stage, task) evaluation (see `missing_cells`)."""
    summaries = list(summaries)
    missing = missing_cells(summaries, order, need_all=need_all, need_base=need_base)
    if missing:
        runs = sorted({f"order={s.get('order')}, method={s.get('method')}" for s in summaries}) or ["no summaries given"]
        names = ", ".join(
            f"(stage {t} [{BASE_TASK if t == BASE_STAGE else stage_label(t, order[t - 1])}], task {j})" for t, j in missing
        )
        raise SersError(f"metrics ({'; '.join(runs)}): {len(missing)} evaluation(s) missing"
                        f" for order {list(order)}: {names}")


def _se(terms: Sequence[float], count: int) -> float | None:
    # Cells are independent eval sets, so variances add; SE of a mean of `count` terms.
    if any(math.isnan(x) for x in terms):
        return None
    return math.sqrt(sum(x * x for x in terms)) / count


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def compute_metrics(summaries: Iterable[Mapping[str, Any]], order: Sequence[str]) -> dict[str, Any]:
    """AR, BWT, FWT (with propagated SEs) and per-task forgetting for one (order, method) run.

    Requires every evaluation with j ≤ t (else SersError). BWT/FWT are None when n = 1; FWT is
    None unless a[i−1][i] and b[i] exist for every i ≥ 2. Forgetting of task i < n is
    max over i ≤ l < n of a[l][i] minus a[n][i] (stages after i was learnt, so it does not depend
    on whether the upper triangle was evaluated). SEs are None where a cell lacks rouge_l_se.
    """
    summaries = list(summaries)
    check_complete(summaries, order, need_all=False)
    a = score_matrix(summaries, order).to_numpy()
    se = score_matrix(summaries, order, field="rouge_l_se").to_numpy()
    base = base_scores(summaries, order) or {}
    base_se = base_scores(summaries, order, field="rouge_l_se") or {}
    n = len(order)
    last = n - 1  # 0-based row of θn

    ar = float(np.mean(a[last]))
    ar_se = _se(list(se[last]), n)

    bwt = bwt_se = fwt = fwt_se = None
    forgetting: dict[str, float] = {}
    if n > 1:
        bwt = float(np.mean([a[last][i] - a[i][i] for i in range(n - 1)]))
        bwt_se = _se([s for i in range(n - 1) for s in (se[last][i], se[i][i])], n - 1)
        # 0-based: task i (i ≥ 1) is scored by θ at row i−1 before training on it.
        ups = [a[i - 1][i] for i in range(1, n)]
        bs = [base.get(order[i], math.nan) for i in range(1, n)]
        if not any(math.isnan(x) for x in ups + bs):
            fwt = float(np.mean([u - b for u, b in zip(ups, bs)]))
            fwt_se = _se([s for i in range(1, n) for s in (se[i - 1][i], base_se.get(order[i], math.nan))], n - 1)
        forgetting = {order[i]: float(max(a[i:last, i]) - a[last][i]) for i in range(n - 1)}

    first = summaries[0] if summaries else {}
    return {
        "order": first.get("order"),
        "method": first.get("method"),
        "n_tasks": n,
        "ar": _num(ar),
        "ar_se": ar_se,
        "bwt": bwt,
        "bwt_se": bwt_se,
        "fwt": fwt,
        "fwt_se": fwt_se,
        "forgetting": forgetting,
    }


MEAN_ORDER = "mean"
_METRICS = ("ar", "bwt", "fwt")


def _combine(values: list[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    vals = [m.get(key) for m in values]
    ses = [m.get(f"{key}_se") for m in values]
    if not vals or any(v is None for v in vals):
        return None, None
    mean = float(np.mean(vals))
    se = None if any(s is None for s in ses) else math.sqrt(sum(s * s for s in ses)) / len(ses)
    return mean, se


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _pm(value: float | None, se: float | None) -> str:
    if _missing(value):
        return "—"
    return f"{value:.2f}" if _missing(se) else f"{value:.2f} ± {se:.2f}"


def replicate_label(order: str, n: int) -> str:
    return f"{order} (mean of {n} replicates)"


def _between_replicates(group: list[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    """Mean over replicates and its between-replicate SE (std / √R)."""
    vals = [m.get(key) for m in group]
    if not vals or any(v is None for v in vals):
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else None


def method_table(metrics_by_method: Mapping[str, Mapping[str, Mapping[str, Any]]], numeric: bool = False,
                 replicate_groups: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per (order, method), then one row per order with several training replicates (their mean
    and between-replicate SE), then, when there are several runs, one "mean" row per method.

    Input: {order: {method: compute_metrics(...) dict}}. The mean row averages over the orders
    that have that method (SE = sqrt(Σ se²)/k); a metric missing in any of them is None there.
    Columns: method, order, "AR ± SE", "BWT ± SE", "FWT" (formatted strings), or with
    numeric=True: method, order, n_orders, ar, ar_se, bwt, bwt_se, fwt, fwt_se (for CSV).
    """
    rows: list[dict[str, Any]] = []
    methods: list[str] = []
    for order, by_method in metrics_by_method.items():
        for method, m in by_method.items():
            if method not in methods:
                methods.append(method)
            row = {"method": method, "order": order, "n_orders": 1}
            row.update({k: m.get(k) for key in _METRICS for k in (key, f"{key}_se")})
            rows.append(row)
    for order, keys in (replicate_groups or {}).items():
        if len(keys) < 2:
            continue
        for method in methods:
            group = [metrics_by_method[k][method] for k in keys if method in metrics_by_method.get(k, {})]
            row = {"method": method, "order": replicate_label(order, len(group)), "n_orders": len(group)}
            for key in _METRICS:
                row[key], row[f"{key}_se"] = _between_replicates(group, key)
            rows.append(row)
    if len(metrics_by_method) > 1:
        for method in methods:
            group = [m[method] for m in metrics_by_method.values() if method in m]
            row = {"method": method, "order": MEAN_ORDER, "n_orders": len(group)}
            for key in _METRICS:
                row[key], row[f"{key}_se"] = _combine(group, key)
            rows.append(row)
    numeric_cols = ["method", "order", "n_orders"] + [k for key in _METRICS for k in (key, f"{key}_se")]
    df = pd.DataFrame(rows, columns=numeric_cols)
    if numeric:
        return df
    return pd.DataFrame(
        {
            "method": df["method"],
            "order": df["order"],
            "AR ± SE": [_pm(v, s) for v, s in zip(df["ar"], df["ar_se"])],
            "BWT ± SE": [_pm(v, s) for v, s in zip(df["bwt"], df["bwt_se"])],
            "FWT": [_pm(v, s) for v, s in zip(df["fwt"], df["fwt_se"])],
        }
    )


def _cell(x: Any) -> str:
    if _missing(x):
        return ""
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def to_markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """GitHub-flavoured Markdown table of `df` (floats to 2 decimals, NaN/None blank)."""
    headers = ([str(df.index.name or "")] if index else []) + [_cell(c) for c in df.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for label, row in zip(df.index, df.itertuples(index=False)):
        cells = ([_cell(label)] if index else []) + [_cell(x) for x in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table_csv(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> None:
    """Write `df` as CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def single_model_metrics(summaries: Iterable[Mapping[str, Any]], order: Sequence[str]) -> dict[str, Any]:
    """AR of one model evaluated once on every task (the multi-task upper bound): no stages, so no
    BWT, FWT or forgetting."""
    by_task = {s["task"]: s for s in summaries}
    missing = [t for t in order if t not in by_task]
    if missing:
        raise SersError(f"metrics: evaluation(s) missing for task(s) {missing}")
    scores = [float(by_task[t]["rouge_l_mean"]) for t in order]
    ses = [by_task[t].get("rouge_l_se") for t in order]
    n = len(order)
    ar_se = None if any(x is None for x in ses) else math.sqrt(sum(float(x) ** 2 for x in ses)) / n
    return {"n_tasks": n, "ar": sum(scores) / n, "ar_se": ar_se, "bwt": None, "bwt_se": None, "fwt": None,
            "fwt_se": None, "forgetting": {}, "scores": dict(zip(order, scores))}
