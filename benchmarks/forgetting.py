"""Run the forgetting benchmark (benchmarks/forgetting.yaml) and write its table with machine,
date and wall time to benchmarks/results/forgetting-<date>.md.

    .venv/bin/python benchmarks/forgetting.py [--cores 2] [--max-threads 1] [extra snakemake args]
    .venv/bin/python benchmarks/forgetting.py --run forgetting-baselines --methods seq ewc l2
        (a subset of the methods in a run folder of its own, paired against its own `seq`;
        written to benchmarks/results/forgetting-baselines-<date>.md)
    .venv/bin/python benchmarks/forgetting.py --run forgetting-explore-a --methods seq --layer benchmarks/explore/a.yaml
        (another setting: the YAML files named by --layer are layered over forgetting.yaml, in order)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from sers.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def stage_scores(matrix_csv: Path) -> list[str]:
    rows = list(csv.DictReader(matrix_csv.open()))
    return [row["stage"] + " " + ", ".join(f"{t} {float(v):.1f}" for t, v in row.items() if t != "stage" and v)
            for row in rows]


def term_line(loss_jsonl: Path) -> str:
    last = read_jsonl(loss_jsonl)[-1]
    stage = loss_jsonl.parent.parent
    return (f"- {stage.parent.name} {stage.name}: term {last['baseline_term']:.3g}, CE {last['ce']:.3g} "
            f"(ratio {last['baseline_term'] / last['ce']:.2g})")


def rehearsal_line(path: Path) -> str:
    summary = json.loads(path.read_text())
    labels = summary["label_counts"] or f"{summary['n_distinct_labels']} distinct"
    return (f"- {path.parent.parent.name} {path.parent.name}: {summary['n_rows']} rows, "
            f"{summary['n_evolved']} evolved, {summary['n_empty_label']} empty; labels {labels}")


def pseudo_funnel_line(filter_summary: Path) -> str:
    summary = json.loads(filter_summary.read_text())
    selected = len(read_jsonl(filter_summary.with_name("selected.jsonl")))
    reasons = ", ".join(f"{n} {r}" for r, n in list(summary["dropped_by_reason"].items())[:3])
    kind, task = filter_summary.parent.parent.name, filter_summary.parent.name
    return f"- {kind} {task}: {summary['raw']} → {summary['kept']} → {selected}" + (f" ({reasons})" if reasons else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", default="2")
    # one thread per job, as the recorded results were made: torch's CPU kernels sum in an order that
    # depends on the thread count, so another count changes the last digits
    ap.add_argument("--max-threads", default="1")
    ap.add_argument("--run", default="forgetting", help="run name: results/<run>, results file forgetting[-…]-<date>.md")
    ap.add_argument("--methods", nargs="+", help="only these methods (the comparisons keep the baselines present)")
    ap.add_argument("--force", action="store_true", help="overwrite today's results file of this run")
    ap.add_argument("--layer", action="append", default=[], metavar="YAML",
                    help="a config file layered over benchmarks/forgetting.yaml (repeatable)")
    args, extra = ap.parse_known_args()
    suffix = args.run.removeprefix("forgetting").lstrip("-")
    out = REPO / f"benchmarks/results/forgetting-{suffix + '-' if suffix else ''}{date.today()}.md"
    if out.exists() and not args.force:
        sys.exit(f"{out.relative_to(REPO)} exists: pass --force to overwrite it, or another --run")
    overrides = [f"run={args.run}"]
    if args.methods:
        overrides.append("methods=[" + ",".join(args.methods) + "]")
    snakemake = str(Path(sys.executable).parent / "snakemake")
    start = time.time()
    subprocess.run([snakemake, "--cores", args.cores, "--max-threads", args.max_threads, "--configfile", "benchmarks/forgetting.yaml",
                    *args.layer, "--config", *overrides, *extra],
                   cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.time() - start
    write_report(REPO / "results" / args.run, out, wall, " ".join(["benchmarks/forgetting.py", *sys.argv[1:]]), args.layer)


def write_report(run: Path, out: Path, wall: float, command: str, layers: list[str] = ()) -> None:
    """The results file of a finished benchmark run: its table, per-task forgetting, stage × task scores,
    and (runs with SERS) W/λ, the labels θt gave the pseudo inputs and a few pseudo rows."""
    table = (run / "summary/methods.md").read_text()
    metrics = {p.parent.name: json.loads(p.read_text()) for p in sorted(run.glob("order1/*/metrics.json"))}
    sims = [json.loads(p.read_text()) for p in sorted(run.glob("order1/*/stage*/similarity.json"))]
    layers = "".join(f" + `{layer}`" for layer in layers)
    lines = [f"# Forgetting benchmark, {date.today()}", "",
             f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores; wall time {wall / 60:.1f} min "
             f"(`{command}`, config `benchmarks/forgetting.yaml`{layers}).", "", table, "",
             "Per-task forgetting (max earlier score − final score):", ""]
    for method, m in metrics.items():
        lines.append(f"- {method}: " + ", ".join(f"{t} {v:.1f}" for t, v in m["forgetting"].items()))
    funnels = [pseudo_funnel_line(path) for path in sorted(run.glob("pseudo/*/*/filter_summary.json"))]
    sections = {
        "Pseudo rows per chain and task (raw → kept by the filter → selected; the leading drop reasons):": funnels,
        "Stage × task ROUGE-L (matrix.csv: the model after each stage, on each task):":
            [f"- {path.parent.name}: " + "; ".join(stage_scores(path)) for path in sorted(run.glob("order1/*/matrix.csv"))],
        "Regularisation term against the cross-entropy, last logged step of each stage (adapter/loss.jsonl):":
            [term_line(path) for path in sorted(run.glob("order1/*/stage*/adapter/loss.jsonl"))
             if json.loads((path.parent / "train_config.json").read_text()).get("baseline")],
        "Task similarity (W, λ) per stage:":
            [f"- {s['method']} stage {s['stage']} ({s['task']}): W = {s['W']}, λ = {s['lambda']:.3f}" for s in sims],
        "Labels θt gave the selected pseudo inputs (rehearsal_summary.json), per method and stage:":
            [rehearsal_line(path) for path in sorted(run.glob("order1/*/stage*/rehearsal_summary.json"))],
        "A few selected pseudo rows per task, with the label SERS's θt gave them:":
            [f"- `{path.parent.name}`: {r['input'][:160]!r} → {r['output'][:80]!r}"
             for path in sorted(run.glob("order1/sers/stage*/rehearsal.jsonl")) for r in read_jsonl(path)[:3]],
    }
    for title, items in sections.items():
        if items:  # a run without SERS (e.g. seq and the baselines) has none of these
            lines += ["", title, "", *items]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
