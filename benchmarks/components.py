"""Which component of SERS carries a difference: paired Δ between SERS and each ablation of a finished run.

    .venv/bin/python benchmarks/components.py results/forgetting [--order order1] [--resamples 2000]

Each line compares two methods on the same eval rows (95 % paired bootstrap over the rows within each
task, as the methods table does): sers − sers-noreg is the penalty's effect, sers − sers-nose
self-evolution's, sers − sers-icl the masked-infill inputs' against SSR's ICL inputs, sers-icl − ssr
evolution + penalty on SSR's own inputs, sers-anchor − sers the anchored, summed penalty's.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sers.comparison import format_difference, paired_comparison, run_scores
from sers.io import read_jsonl

PAIRS = [
    ("sers", "sers-noreg", "the penalty λ(W)·½Σmean(θ²)"),
    ("sers", "sers-nose", "self-evolution (blend relabelling)"),
    ("sers", "sers-icl", "masked-infill inputs vs SSR's ICL inputs"),
    ("sers-icl", "ssr", "evolution + penalty on SSR's inputs"),
    ("sers-anchor", "sers", "anchored, summed penalty vs the reference's"),
]


def load_run(run: Path, order: str, method: str):
    metrics = json.loads((run / order / method / "metrics.json").read_text())
    tasks = metrics["tasks"]
    cells = []
    for n in range(1, len(tasks) + 1):
        model = run / order / f"stage1-{tasks[0]}" if n == 1 else run / order / method / f"stage{n}-{tasks[n - 1]}"
        for task in tasks[:n]:
            summary = json.loads((model / "eval" / f"{task}.json").read_text())
            cells.append((summary, read_jsonl(model / "eval" / f"{task}.jsonl")))
    return run_scores(cells, tasks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--order", default="order1")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    print("| comparison | what it isolates | ΔAR [95% CI], p | ΔBWT [95% CI], p |")
    print("|---|---|---|---|")
    for method, baseline, what in PAIRS:
        if not all((args.run / args.order / m / "metrics.json").is_file() for m in (method, baseline)):
            continue
        d = paired_comparison([(load_run(args.run, args.order, method), load_run(args.run, args.order, baseline))],
                              args.resamples, seed=0)
        print(f"| {method} − {baseline} | {what} | {format_difference(d['ar'])} | {format_difference(d['bwt'])} |")


if __name__ == "__main__":
    main()
