"""Figures for the report; each function writes one figure atomically (format from the suffix)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from sers.errors import SersError  # noqa: E402
from sers.io import atomic_path  # noqa: E402

FORMATS = ("png", "svg", "pdf")
FUNNEL_STEPS = ("raw", "filtered", "selected", "evolved")


def _format(path: str | os.PathLike) -> str:
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise SersError(f"{path}: figure path must end in one of {', '.join('.' + f for f in FORMATS)}")
    return fmt


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    # atomic_path's temp file ends in ".tmp", so the format must be given explicitly.
    fmt = _format(path)
    # No timestamp in SVG/PDF so an unchanged figure is byte-identical on rerun.
    metadata = {"Date": None} if fmt in ("svg", "pdf") else None
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
    finally:
        plt.close(fig)


def _num(x: Any) -> float:
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan


def plot_matrix_heatmap(matrix_df: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Stage × task heatmap of ROUGE-L (0–100), every cell annotated; NaN cells shown blank as "–"."""
    _format(path)
    values = matrix_df.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(n_cols, 1), 1.0 + 0.7 * max(n_rows, 1)))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=100.0, aspect="auto")
    for r in range(n_rows):
        for c in range(n_cols):
            v = values[r, c]
            if math.isnan(v):
                ax.text(c, r, "–", ha="center", va="center", color="black", fontsize=9)
            else:
                ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=9, color="white" if v < 50 else "black")
    ax.set_xticks(range(n_cols), [str(c) for c in matrix_df.columns])
    ax.set_yticks(range(n_rows), [str(i) for i in matrix_df.index])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after stage")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="ROUGE-L")
    _save(fig, path)


def plot_forgetting_curves(matrices: Mapping[str, pd.DataFrame], path: str | os.PathLike) -> None:
    """One panel per task: score after each stage (x = stage), a line per method.

    `matrices` maps method -> stage × task DataFrame (as from `sers.metrics.score_matrix`).
    """
    _format(path)
    if not matrices:
        raise SersError(f"{path}: no score matrices to plot")
    tasks: list[str] = []
    for df in matrices.values():
        tasks += [str(c) for c in df.columns if str(c) not in tasks]
    n_stages = max(len(df.index) for df in matrices.values())
    labels = next(df for df in matrices.values() if len(df.index) == n_stages).index
    stages = np.arange(1, n_stages + 1)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), sharex=True, sharey=True,
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        trained = [k + 1 for k, label in enumerate(labels) if str(label).endswith(f"-{task}")]
        for k in trained:
            ax.axvline(k, color="grey", linestyle="--", linewidth=0.8)
        for method, df in matrices.items():
            if task not in df.columns:
                continue
            ys = df[task].to_numpy(dtype=float)
            ax.plot(stages[: len(ys)], ys, marker="o", label=str(method))
        ax.set_title(task)
        ax.set_xticks(stages, [str(x) for x in labels], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("stage")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ROUGE-L")
    axes[0][-1].legend(fontsize=8)
    _save(fig, path)


def plot_similarity(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """W-distance and λ per stage, two panels, a line per (method, order).

    Each record: {"order", "method", "stage", "task", "W", "lambda"}; W/λ may be None (stage 1).
    """
    _format(path)
    if not records:  # no method of this run has a task-similarity penalty (e.g. seq and the baselines)
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no method of this run computes a task similarity", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return
    for i, r in enumerate(records):
        missing = [k for k in ("order", "method", "stage", "W", "lambda") if k not in r]
        if missing:
            raise SersError(f"{path}: similarity record {i} lacks {', '.join(map(repr, missing))}")
    df = pd.DataFrame(
        {
            "run": [f"{r['method']} / {r['order']}" for r in records],
            "stage": [int(r["stage"]) for r in records],
            "task": [str(r.get("task", "")) for r in records],
            "W": [_num(r["W"]) for r in records],
            "lambda": [_num(r["lambda"]) for r in records],
        }
    ).sort_values(["run", "stage"], kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "W", "W-distance"), (axes[1], "lambda", "λ")):
        for run, g in df.groupby("run", sort=False):
            g = g[~g[key].isna()]
            if len(g):
                ax.plot(g["stage"], g[key], marker="o", label=run)
        if key == "lambda":  # the axis spans [λmin, λmax], so a reader sees where λ sits in its range
            lows = [_num(r.get("lambda_min")) for r in records]
            highs = [_num(r.get("lambda_max")) for r in records]
            lo, hi = np.nanmin(lows + [np.nan]), np.nanmax(highs + [np.nan])
            if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
                pad = 0.05 * (hi - lo)
                ax.set_ylim(lo - pad, hi + pad)
                ax.axhline(lo, color="grey", linestyle=":", linewidth=0.8)
                ax.axhline(hi, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("stage")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per stage")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, fontsize=8)
    _save(fig, path)


def plot_funnel(funnel: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Per task, bars raw → filtered → selected → evolved; the raw bar is split into kept + drop reasons.

    funnel[task] = {"raw": int, "filtered": int, "selected": int, "evolved": int | None,
    "dropped_by_reason": {reason: count}}; a missing/None "evolved" is not drawn.
    """
    _format(path)
    if not funnel:
        raise SersError(f"{path}: empty funnel")
    for task, f in funnel.items():
        missing = [k for k in ("raw", "filtered", "selected") if f.get(k) is None]
        if missing:
            raise SersError(f"{path}: funnel for task {task!r} lacks {', '.join(map(repr, missing))}")
    reasons: list[str] = []
    for f in funnel.values():
        reasons += [str(r) for r in (f.get("dropped_by_reason") or {}) if str(r) not in reasons]
    reason_colors = dict(zip(reasons, matplotlib.colormaps["tab20b"](np.linspace(0, 1, max(len(reasons), 1)))))
    step_colors = dict(zip(FUNNEL_STEPS, ("#4c72b0", "#55a868", "#c44e52", "#8172b2")))
    width = 0.8 / len(FUNNEL_STEPS)
    tasks = list(funnel)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(tasks)), 4.2))
    labelled: set[str] = set()

    def bar(x: float, h: float, bottom: float, color: Any, label: str) -> None:
        ax.bar(x, h, width, bottom=bottom, color=color, edgecolor="white",
               label=None if label in labelled else label)
        labelled.add(label)

    for t, task in enumerate(tasks):
        f = funnel[task]
        for k, step in enumerate(FUNNEL_STEPS):
            value = f.get(step)
            if value is None:
                continue
            x = t + (k - (len(FUNNEL_STEPS) - 1) / 2) * width
            if step == "raw":
                # The rows that pass the filters at the bottom, then one segment per drop reason.
                bottom = float(f["filtered"])
                bar(x, bottom, 0.0, step_colors["raw"], "raw (kept by the filters)")
                for reason, count in (f.get("dropped_by_reason") or {}).items():
                    bar(x, float(count), bottom, reason_colors[str(reason)], f"dropped: {reason}")
                    bottom += float(count)
                top = max(bottom, float(value))
            else:
                bar(x, float(value), 0.0, step_colors[step], step)
                top = float(value)
            ax.text(x, top, str(int(value)), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("rows")
    ax.set_title("pseudo-input funnel: raw → filtered → selected → evolved")
    ax.margins(y=0.15)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_pseudo_vs_seeds(pseudo_emb: np.ndarray, seed_emb: np.ndarray, path: str | os.PathLike, title: str) -> None:
    """2-D PCA (fitted on both sets together) of pseudo-input and real-seed embeddings."""
    _format(path)
    pseudo = np.asarray(pseudo_emb, dtype=float)
    seeds = np.asarray(seed_emb, dtype=float)
    if pseudo.ndim != 2 or seeds.ndim != 2 or pseudo.shape[1] != seeds.shape[1]:
        raise SersError(f"{path}: embeddings must be 2-D with equal widths, got {pseudo.shape} and {seeds.shape}")
    both = np.vstack([pseudo, seeds])
    if len(both) == 0:
        raise SersError(f"{path}: no embeddings to plot")
    k = min(2, both.shape[0], both.shape[1])
    proj = PCA(n_components=k, random_state=0).fit_transform(both) if len(both) > 1 else np.zeros((1, k))
    if k < 2:
        proj = np.hstack([proj, np.zeros((len(proj), 2 - k))])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    p, s = proj[: len(pseudo)], proj[len(pseudo):]
    ax.scatter(p[:, 0], p[:, 1], s=10, alpha=0.5, marker="o", label=f"pseudo inputs ({len(pseudo)})")
    ax.scatter(s[:, 0], s[:, 1], s=60, marker="*", color="#c44e52", edgecolor="black", linewidth=0.5,
               label=f"real seeds ({len(seeds)})")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_differences(comparisons: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Forest plot: every method − baseline in AR and BWT with its paired bootstrap interval.

    Each record: {"order", "method", "baseline", "ar": {"diff", "ci"}, "bwt": {...} or None}."""
    _format(path)
    labels = [f"{c['method']} − {c['baseline']} ({c['order']})" for c in comparisons]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * max(len(labels), 2) + 1.4), sharey=True)
    for ax, key, title in ((axes[0], "ar", "ΔAR"), (axes[1], "bwt", "ΔBWT (positive = forgets less)")):
        for y, c in enumerate(comparisons):
            d = c.get(key)
            if not d:
                continue
            lo, hi = d["ci"]
            color = "#7f7f7f" if d["within_noise"] else ("#55a868" if d["diff"] > 0 else "#c44e52")
            ax.errorbar(d["diff"], y, xerr=[[d["diff"] - lo], [hi - d["diff"]]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("ROUGE-L points (95% paired bootstrap interval)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].invert_yaxis()
    if not labels:
        axes[0].text(0.5, 0.5, "no baseline among the methods", ha="center", va="center", transform=axes[0].transAxes)
    _save(fig, path)
