"""Which component of SERS carries a difference: paired Δ between SERS and each ablation of finished runs.

    .venv/bin/python benchmarks/components.py results/forgetting-rep1 [results/forgetting-rep2 …] [--order order1]

Each line compares two methods on the same eval rows (95 % paired bootstrap over the rows within each
task, as the methods table does; with several run folders — replicates — pooled over them, the
replicates resampled too): sers − sers-noreg is the penalty's effect, sers − sers-nose
self-evolution's, sers − sers-icl the masked-infill inputs' against SSR's ICL inputs, sers-icl − ssr
evolution + penalty on SSR's own inputs, sers-anchor − sers the anchored, summed penalty's.
`forgetting.py` also writes, pooled the same way, `forgetting_table` (each method's own BWT: does it
forget?) and `against_table` (sers − every other method).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sers.comparison import bwt_interval, format_difference, paired_comparison, run_scores
from sers.io import read_jsonl

PAIRS = [
    ("sers", "sers-noreg", "the penalty λ(W)·½Σmean(θ²)"),
    ("sers", "sers-nose", "self-evolution (blend relabelling)"),
    ("sers", "sers-icl", "masked-infill inputs vs SSR's ICL inputs"),
    ("sers-icl", "ssr", "evolution + penalty on SSR's inputs"),
    ("sers-anchor", "sers", "anchored, summed penalty vs the reference's"),
]


def run_scores_of(run: Path) -> tuple[dict, dict]:
    """({order: {method: metrics}}, {order: {method: RunScores}}) of a finished run folder, from its
    metrics.json files and the per-row predictions of the models they were computed from."""
    by_order: dict = {}
    scores: dict = {}
    for path in sorted(run.glob("*/*/metrics.json")):
        m = json.loads(path.read_text())
        order, method, tasks = m["order"], m["method"], m["tasks"]
        if method == "mtl":
            dirs = {(1, t): run / "mtl/stage1-all" for t in tasks}
        else:
            dirs = {(s, t): run / order / ("" if s == 1 else method) / f"stage{s}-{tasks[s - 1]}"
                    for s in range(1, len(tasks) + 1) for t in tasks[:s]}
        cells = [(json.loads((d / f"eval/{t}.json").read_text()), read_jsonl(d / f"eval/{t}.jsonl"))
                 for (s, t), d in dirs.items()]
        by_order.setdefault(order, {})[method] = m
        scores.setdefault(order, {})[method] = run_scores(cells, tasks)
    return by_order, scores


def component_table(run_scores: list[dict], order: str = "order1", resamples: int = 2000, seed: int = 0) -> str:
    """The Markdown table of every PAIRS comparison whose two methods every run holds (`run_scores`: the
    second item of `run_scores_of` for each run)."""
    scores = [s.get(order, {}) for s in run_scores]
    lines = ["| comparison | what it isolates | ΔAR [95% CI], p | ΔBWT [95% CI], p |", "|---|---|---|---|"]
    for method, baseline, what in PAIRS:
        if not all(method in s and baseline in s for s in scores):
            continue
        d = paired_comparison([(s[method], s[baseline]) for s in scores], resamples, seed=seed, resample_runs=True)
        lines.append(f"| {method} − {baseline} | {what} | {format_difference(d['ar'])} | {format_difference(d['bwt'])} |")
    return "\n".join(lines)


def against_table(run_scores: list[dict], method: str = "sers", order: str = "order1", resamples: int = 2000,
                  seed: int = 0) -> str:
    """The Markdown table of `method` − X for every other method X, pooled over the runs that hold both
    (replicates resampled too; a method run in one replicate only is compared within that one). With the
    methods table's seed, `method` − a baseline of that table gets the same interval there and here."""
    scores = [s.get(order, {}) for s in run_scores]
    others = list(dict.fromkeys(m for s in scores if method in s for m in s if m != method))
    lines = ["| comparison | replicates | ΔAR [95% CI], p | ΔBWT [95% CI], p |", "|---|---|---|---|"]
    for other in others:
        pairs = [(s[method], s[other]) for s in scores if method in s and other in s]
        d = paired_comparison(pairs, resamples, seed=seed, resample_runs=True)
        lines.append(f"| {method} − {other} | {len(pairs)} | {format_difference(d['ar'])} | "
                     f"{format_difference(d['bwt'])} |")
    return "\n".join(lines)


def forgetting_table(run_scores: list[dict], order: str = "order1", resamples: int = 2000, seed: int = 0) -> str:
    """The Markdown table of every method's own BWT with its 95 % interval, pooled over the runs that
    hold it (replicates resampled too): which methods forget at all."""
    scores = [s.get(order, {}) for s in run_scores]
    lines = ["| method | replicates | BWT [95% CI], p |", "|---|---|---|"]
    for method in dict.fromkeys(m for s in scores for m in s):
        runs = [s[method] for s in scores if method in s]
        d = bwt_interval(runs, resamples, seed)
        if d is not None:
            lines.append(f"| {method} | {len(runs)} | {format_difference(d)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--order", default="order1")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    print(component_table([run_scores_of(run)[1] for run in args.runs], args.order, args.resamples))


if __name__ == "__main__":
    main()
