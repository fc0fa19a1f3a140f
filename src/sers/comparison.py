"""Paired statistics over evaluation rows: every model of a run scores the same eval rows of a task,
so differences are taken row by row, not between two independent means.

A run's scores are `RunScores`: for every task of the order, the per-row ROUGE-L of the final model
(a[n][i]) and, for every task but the last, of the model right after learning it (a[i][i]),
aligned by row id. From them:

- `paired_bwt_se`: BWT's standard error from the per-row differences a[n][i] − a[i][i];
- `paired_comparison`: method − baseline in AR and BWT, with a percentile bootstrap interval
  (eval rows resampled within each task, the same resample for both methods and for both cells of a
  task) and a two-sided bootstrap p-value; several runs (orders, replicates) are averaged, each
  resampled on its own rows, and training replicates of one order are themselves resampled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import SersError


@dataclass
class RunScores:
    """Per-row scores of one (order, method) run, aligned by eval row id within each task."""

    order: list[str]
    final: dict[str, dict[str, float]]            # task -> {row id: score} of the final model
    learnt: dict[str, dict[str, float]] | None    # task -> {row id: score} right after its stage (None: mtl)


def _aligned(task: str, *cells: Mapping[str, float]) -> list[np.ndarray]:
    ids = sorted(cells[0])
    for c in cells[1:]:
        if set(c) != set(ids):
            raise SersError(f"comparison: the evaluations of task {task!r} scored different rows "
                            f"({len(ids)} vs {len(c)} ids); paired statistics need the same eval rows")
    return [np.array([c[i] for i in ids], dtype=np.float64) for c in cells]


def paired_bwt_se(run: RunScores) -> float | None:
    """SE of BWT = (1/(n−1)) Σ_{i<n} mean_r(a[n][i][r] − a[i][i][r]), from the per-row differences."""
    n = len(run.order)
    if n < 2 or run.learnt is None:
        return None
    var = 0.0
    for task in run.order[:-1]:
        final, learnt = _aligned(task, run.final[task], run.learnt[task])
        d = final - learnt
        var += d.var(ddof=1) / len(d) if len(d) > 1 else 0.0
    return math.sqrt(var) / (n - 1)


def _terms(method: RunScores, baseline: RunScores) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per task, the per-row terms whose means make ΔAR (all tasks) and ΔBWT (tasks but the last)."""
    if method.order != baseline.order:
        raise SersError(f"comparison: orders differ ({method.order} vs {baseline.order})")
    ar = []
    for task in method.order:
        m, b = _aligned(task, method.final[task], baseline.final[task])
        ar.append(m - b)
    if method.learnt is None or baseline.learnt is None or len(method.order) < 2:
        return ar, None
    bwt = []
    for task in method.order[:-1]:
        mf, ml, bf, bl = _aligned(task, method.final[task], method.learnt[task], baseline.final[task],
                                  baseline.learnt[task])
        bwt.append((mf - ml) - (bf - bl))
    return ar, bwt


def _bootstrap_means(terms: list[np.ndarray], indices: list[np.ndarray]) -> np.ndarray:
    """[B] resampled values of mean over tasks of mean over rows (rows resampled by `indices`)."""
    return np.mean([t[idx].mean(axis=1) for t, idx in zip(terms, indices)], axis=0)


def _pool(boots: list[np.ndarray], rng: np.random.Generator, resample_runs: bool) -> np.ndarray:
    """[B] pooled resampled values: the mean over runs, or (`resample_runs`) over runs drawn with
    replacement per resample, so the interval also holds the spread between training replicates."""
    stacked = np.stack(boots)  # [runs, B]
    if not resample_runs or len(boots) < 2:
        return stacked.mean(axis=0)
    n_runs, n_boot = stacked.shape
    drawn = rng.integers(0, n_runs, size=(n_boot, n_runs))
    return stacked[drawn, np.arange(n_boot)[:, None]].mean(axis=1)


def _summarise(point: float, boot: np.ndarray, confidence: float) -> dict:
    alpha = (1.0 - confidence) / 2
    lo, hi = (float(x) for x in np.quantile(boot, [alpha, 1 - alpha]))
    if np.all(boot == 0):
        p = 1.0
    else:
        p = float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))
        p = max(p, 1.0 / len(boot))
    return {"diff": point, "ci": [lo, hi], "p": p, "within_noise": bool(lo <= 0 <= hi)}


def paired_comparison(pairs: Sequence[tuple[RunScores, RunScores]], n_resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95, resample_runs: bool = False) -> dict:
    """method − baseline in AR and BWT, averaged over the (method run, baseline run) pairs.

    `resample_runs` (training replicates of one order): each resample also draws the runs with
    replacement (a two-level bootstrap: replicates, then eval rows within each), so a difference that
    one seed shows and another does not is not called decisive.

    Returns {"ar": {diff, ci, p, within_noise}, "bwt": {...} or None, n_resamples, confidence, n_runs}.
    """
    if not pairs:
        raise SersError("comparison: no runs to compare")
    if n_resamples < 1:
        raise SersError(f"comparison: n_resamples must be ≥ 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    ar_points, ar_boots, bwt_points, bwt_boots = [], [], [], []
    for method, baseline in pairs:
        ar, bwt = _terms(method, baseline)
        # one resample of each task's rows, shared by the AR and BWT terms of that task
        indices = [rng.integers(0, len(t), size=(n_resamples, len(t))) for t in ar]
        ar_points.append(float(np.mean([t.mean() for t in ar])))
        ar_boots.append(_bootstrap_means(ar, indices))
        if bwt is not None:
            bwt_points.append(float(np.mean([t.mean() for t in bwt])))
            bwt_boots.append(_bootstrap_means(bwt, indices[: len(bwt)]))
    result = {"n_resamples": n_resamples, "confidence": confidence, "n_runs": len(pairs),
              "resample_runs": resample_runs and len(pairs) > 1,
              "ar": _summarise(float(np.mean(ar_points)), _pool(ar_boots, rng, resample_runs), confidence),
              "bwt": None}
    if len(bwt_points) == len(pairs):
        result["bwt"] = _summarise(float(np.mean(bwt_points)), _pool(bwt_boots, rng, resample_runs), confidence)
    return result


def bwt_interval(runs: Sequence[RunScores], n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                 resample_runs: bool = True) -> dict | None:
    """BWT itself — does a method forget? — with a bootstrap interval over the per-row differences
    a[n][i] − a[i][i], pooled over `runs` as `paired_comparison` pools (replicates drawn too unless
    `resample_runs` is off). {diff (the BWT), ci, p, within_noise}; None for a run without BWT (mtl)."""
    if not runs:
        raise SersError("comparison: no runs for a BWT interval")
    if any(r.learnt is None or len(r.order) < 2 for r in runs):
        return None
    rng = np.random.default_rng(seed)
    points, boots = [], []
    for run in runs:
        terms = [np.subtract(*_aligned(task, run.final[task], run.learnt[task])) for task in run.order[:-1]]
        indices = [rng.integers(0, len(t), size=(n_resamples, len(t))) for t in terms]
        points.append(float(np.mean([t.mean() for t in terms])))
        boots.append(_bootstrap_means(terms, indices))
    return _summarise(float(np.mean(points)), _pool(boots, rng, resample_runs), confidence)


def format_difference(d: dict | None) -> str:
    """"+1.23 [−0.50, 2.96], p 0.17 (within noise)" for a table cell; "—" when there is none."""
    if not d:
        return "—"
    lo, hi = d["ci"]
    text = f"{d['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}], p {d['p']:.2g}"
    return text + (" (within noise)" if d["within_noise"] else "")


def run_scores(cells: Sequence[tuple[Mapping, Sequence[Mapping]]], order: Sequence[str]) -> RunScores:
    """A run's `RunScores` from (evaluation summary, its prediction rows) pairs.

    Summaries carry `stage` and `task` (and `stage_task` "all" for the multi-task model, whose one
    evaluation is its final score and which has no "right after learning" scores)."""
    order = list(order)
    by_cell: dict[tuple[int, str], dict[str, float]] = {}
    multitask = False
    for summary, predictions in cells:
        multitask = multitask or summary.get("stage_task") == "all"
        by_cell[(int(summary["stage"]), summary["task"])] = {str(r["id"]): float(r["rouge_l"]) for r in predictions}
    final_stage = 1 if multitask else len(order)
    try:
        final = {t: by_cell[(final_stage, t)] for t in order}
        learnt = None if multitask else {t: by_cell[(i + 1, t)] for i, t in enumerate(order)}
    except KeyError as e:
        raise SersError(f"comparison: no evaluation of stage {e.args[0][0]} on task {e.args[0][1]!r}") from None
    return RunScores(order, final, learnt)


MEAN_ORDER = "mean"


def compare_methods(runs: Mapping[str, Mapping[str, RunScores]], baselines: Sequence[str], n_resamples: int = 2000,
                    seed: int = 0, confidence: float = 0.95, groups: Mapping[str, Sequence[str]] | None = None,
                    resample_replicates: bool = True) -> dict[tuple[str, str], dict[str, dict]]:
    """{(order, method): {baseline: paired_comparison}} for every method against every baseline present,
    per order, pooled over each group of runs with several members (training replicates of one order,
    keyed by `group_label(order, n)`; replicates resampled too unless `resample_replicates` is off) and,
    with several runs, pooled over all of them (order "mean"; orders are a design, not a draw: not
    resampled)."""
    from .metrics import replicate_label

    groups = {g: list(keys) for g, keys in (groups or {}).items() if len(keys) > 1}
    out: dict[tuple[str, str], dict[str, dict]] = {}
    methods = list(dict.fromkeys(m for by_method in runs.values() for m in by_method))
    for baseline in baselines:
        for method in methods:
            if method == baseline:
                continue
            pairs = []
            for order, by_method in runs.items():
                if method in by_method and baseline in by_method:
                    pair = (by_method[method], by_method[baseline])
                    pairs.append(pair)
                    out.setdefault((order, method), {})[baseline] = paired_comparison([pair], n_resamples, seed,
                                                                                      confidence)
            for group, keys in groups.items():
                members = [(runs[k][method], runs[k][baseline]) for k in keys
                           if method in runs.get(k, {}) and baseline in runs.get(k, {})]
                if members:
                    out.setdefault((replicate_label(group, len(members)), method), {})[baseline] = \
                        paired_comparison(members, n_resamples, seed, confidence, resample_replicates)
            if len(runs) > 1 and pairs:
                out.setdefault((MEAN_ORDER, method), {})[baseline] = paired_comparison(pairs, n_resamples, seed,
                                                                                       confidence)
    return out


def with_comparison_columns(table, comparisons: Mapping[tuple[str, str], Mapping[str, dict]],
                            baselines: Sequence[str], numeric: bool = False):
    """`sers.metrics.method_table` plus, per baseline, ΔAR and ΔBWT with their interval and p-value
    (formatted cells, or numeric columns d_ar_vs_<b>, _lo, _hi, _p and the same for BWT)."""
    table = table.copy()
    keys = list(zip(table["order"], table["method"]))
    present = [b for b in baselines if any(b in comparisons.get(k, {}) for k in keys)]
    for b in present:
        for metric, label in (("ar", "ΔAR"), ("bwt", "ΔBWT")):
            cells = [comparisons.get(k, {}).get(b, {}).get(metric) for k in keys]
            if numeric:
                table[f"d_{metric}_vs_{b}"] = [c["diff"] if c else None for c in cells]
                table[f"d_{metric}_vs_{b}_lo"] = [c["ci"][0] if c else None for c in cells]
                table[f"d_{metric}_vs_{b}_hi"] = [c["ci"][1] if c else None for c in cells]
                table[f"d_{metric}_vs_{b}_p"] = [c["p"] if c else None for c in cells]
            else:
                table[f"{label} vs {b} [95% CI], p"] = [format_difference(c) for c in cells]
    return table
