"""Run the forgetting benchmark (benchmarks/forgetting.yaml) and write its table with machine,
date and wall time to benchmarks/results/forgetting-<date>.md.

    .venv/bin/python benchmarks/forgetting.py [--cores 2] [--max-threads 1] [extra snakemake args]
    .venv/bin/python benchmarks/forgetting.py --run forgetting-baselines --methods seq ewc l2
        (a subset of the methods in a run folder of its own, paired against its own `seq`;
        written to benchmarks/results/forgetting-baselines-<date>.md)
    .venv/bin/python benchmarks/forgetting.py --run forgetting-explore-a --methods seq --layer benchmarks/forgetting-settings/order-sa-para-trans.yaml
        (another setting: the YAML files named by --layer are layered over forgetting.yaml, in order)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import yaml
from components import (  # benchmarks/, this script's folder
    against_table,
    component_table,
    forgetting_table,
    run_scores_of,
)

from sers.comparison import compare_methods, with_comparison_columns
from sers.io import read_jsonl
from sers.metrics import method_table, to_markdown_table

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
    rows = read_jsonl(path.with_name("rehearsal.jsonl"))
    changed = sum(bool(r.get("evolved")) and r["output"] != r.get("theta_t_label") for r in rows)
    return (f"- {path.parent.parent.name} {path.parent.name}: {summary['n_rows']} rows, "
            f"{summary['n_evolved']} evolved ({changed} with a label other than θt's), "
            f"{summary['n_empty_label']} empty; labels {labels}")


def probe_line(path: Path) -> str:
    p = json.loads(path.read_text())
    fmt = lambda x: "—" if x is None else f"{x:.1f}"  # noqa: E731
    return (f"- {path.parent.parent.name} {path.parent.name}: {p['n_rows']} held-back rows, {p['n_evolved']} "
            f"re-decoded, {p['n_changed']} changed; ROUGE-L vs the real output, all rows θt {fmt(p['rouge_theta_t_all'])}"
            f" → kept {fmt(p['rouge_label_all'])}; changed rows θt {fmt(p['rouge_theta_t_changed'])} → kept "
            f"{fmt(p['rouge_label_changed'])} ({p['n_closer']} closer, {p['n_farther']} farther)")


def gradient_line(loss_jsonl: Path) -> str | None:
    """The regulariser's gradient norm over the task loss's, mean (and range) over the stage's steps."""
    ratios = [r["grad_norm_regulariser"] / r["grad_norm_task"] for r in read_jsonl(loss_jsonl)
              if r.get("grad_norm_task")]
    if not ratios:
        return None
    stage = loss_jsonl.parent.parent
    cfg = json.loads((loss_jsonl.parent / "train_config.json").read_text())
    strength = (f"λ {cfg['lam']:.3g}" if not cfg.get("baseline") else
                f"{cfg['baseline']['kind']} λ {cfg['baseline'].get('lambda', cfg['baseline'].get('lambda1'))}")
    return (f"- {stage.parent.name} {stage.name} ({strength}): ‖∇ regulariser‖ / ‖∇ task loss‖ mean "
            f"{sum(ratios) / len(ratios):.3g} (min {min(ratios):.3g}, max {max(ratios):.3g}, {len(ratios)} steps)")


def pseudo_funnel_line(filter_summary: Path) -> str:
    summary = json.loads(filter_summary.read_text())
    selected = len(read_jsonl(filter_summary.with_name("selected.jsonl")))
    reasons = ", ".join(f"{n} {r}" for r, n in list(summary["dropped_by_reason"].items())[:3])
    kind, task = filter_summary.parent.parent.name, filter_summary.parent.name
    return f"- {kind} {task}: {summary['raw']} → {summary['kept']} → {selected}" + (f" ({reasons})" if reasons else "")


def pooled_table(loaded: list[tuple[dict, dict]], baselines: list[str], n_resamples: int, seed: int) -> pd.DataFrame:
    """One row per method and replicate run, then per method the mean over the replicates (between-
    replicate SE) with Δ vs each baseline pooled over the replicates and their eval rows (both resampled)."""
    by_order: dict = {}
    scores: dict = {}
    groups: dict = {}
    for r, (metrics, run_scores_) in enumerate(loaded, start=1):  # run_scores_of(run) per replicate run
        for order in metrics:
            key = order if len(loaded) == 1 else f"{order}-rep{r}"
            by_order[key], scores[key] = metrics[order], run_scores_[order]
            groups.setdefault(order, []).append(key)
    comparisons = compare_methods(scores, baselines, n_resamples, seed, groups=groups)
    tables = [with_comparison_columns(method_table(by_order, numeric, groups), comparisons, baselines, numeric)
              for numeric in (False, True)]
    # one order: its replicates' pooled row is the result ("mean" would treat replicates as orders)
    return [t[t["order"] != "mean"] if len(groups) == 1 else t for t in tables]


def snakemake_run(args, run: str, seed: int | None, methods: list[str] | None, extra: list[str]) -> None:
    overrides = [f"run={run}"] + ([f"seed={seed}"] if seed is not None else [])
    if methods:
        overrides.append("methods=[" + ",".join(methods) + "]")
    snakemake = str(Path(sys.executable).parent / "snakemake")
    subprocess.run([snakemake, "--cores", args.cores, "--max-threads", args.max_threads,
                    "--configfile", "benchmarks/forgetting.yaml", *args.layer, "--config", *overrides, *extra],
                   cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", default="2")
    # one thread per job, as the recorded results were made: torch's CPU kernels sum in an order that
    # depends on the thread count, so another count changes the last digits
    ap.add_argument("--max-threads", default="1")
    ap.add_argument("--run", default="forgetting", help="run name: results/<run>, results file forgetting[-…]-<date>.md")
    ap.add_argument("--methods", nargs="+", help="only these methods (the comparisons keep the baselines present)")
    ap.add_argument("--force", action="store_true", help="overwrite today's results file of this run "
                    "(with --replicates: rerun the replicates whose report exists, e.g. to add methods)")
    ap.add_argument("--layer", action="append", default=[], metavar="YAML",
                    help="a config file layered over benchmarks/forgetting.yaml (repeatable)")
    ap.add_argument("--replicates", type=int, default=1,
                    help="N > 1: N runs <run>-rep1…N, seeds seed, seed+1, … (sampling, synthesis, training), "
                         "pooled into benchmarks/results/<run>-<date>/pooled.md")
    ap.add_argument("--first-replicate-methods", nargs="+", default=[],
                    help="methods run in replicate 1 only (besides --methods)")
    ap.add_argument("--pool-only", action="store_true", help="skip snakemake: pool the finished replicate runs")
    args, extra = ap.parse_known_args()
    suffix = args.run.removeprefix("forgetting").lstrip("-")
    name = f"forgetting-{suffix + '-' if suffix else ''}{date.today()}"
    command = " ".join(["benchmarks/forgetting.py", *sys.argv[1:]])
    if args.replicates == 1:
        out = REPO / f"benchmarks/results/{name}.md"
        if out.exists() and not args.force:
            sys.exit(f"{out.relative_to(REPO)} exists: pass --force to overwrite it, or another --run")
        start = time.time()
        if not args.pool_only:
            snakemake_run(args, args.run, None, (args.methods or []) + args.first_replicate_methods or None, extra)
        write_report(REPO / "results" / args.run, out, time.time() - start, command, args.layer)
        return
    out_dir = REPO / "benchmarks/results" / name
    base_seed = yaml.safe_load((REPO / "benchmarks/forgetting.yaml").read_text())["seed"]
    for layer in args.layer:
        base_seed = (yaml.safe_load(Path(layer).read_text()) or {}).get("seed", base_seed)
    runs = []
    for r in range(1, args.replicates + 1):
        run = f"{args.run}-rep{r}"
        runs.append(REPO / "results" / run)
        report = out_dir / f"rep{r}.md"
        start = time.time()
        if report.exists() and not args.force:
            print(f"note: {report.relative_to(REPO)} exists: replicate {r} is finished and pools as it is "
                  "(--force reruns it)")
        elif not args.pool_only:
            methods = (args.methods or []) + (args.first_replicate_methods if r == 1 else [])
            snakemake_run(args, run, base_seed + r - 1, methods or None, extra)
            write_report(runs[-1], report, time.time() - start, f"{command} (replicate {r}, seed {base_seed + r - 1})",
                         args.layer)
        summary = runs[-1] / "summary"
        (out_dir / f"rep{r}").mkdir(parents=True, exist_ok=True)
        for f in ("methods.csv", "comparisons.json"):
            if (summary / f).is_file():
                shutil.copyfile(summary / f, out_dir / f"rep{r}" / f)
            else:  # --pool-only over a replicate cut short: its finished methods still pool
                print(f"note: {summary / f} is missing; replicate {r} pools the methods it finished")
    stats = yaml.safe_load((REPO / "benchmarks/forgetting.yaml").read_text())["stats"]
    loaded = [run_scores_of(run) for run in runs]  # every prediction file read once, for both tables
    table, numeric = pooled_table(loaded, stats["baselines"], stats["bootstrap_resamples"], base_seed)
    numeric.to_csv(out_dir / "pooled.csv", index=False)
    (out_dir / "pooled.md").write_text(
        f"# Forgetting benchmark, {args.replicates} replicates, {date.today()}\n\n"
        f"`{command}`; config `benchmarks/forgetting.yaml`{''.join(f' + `{x}`' for x in args.layer)}; "
        f"replicate r is run `{args.run}-rep<r>` with seed {base_seed} + r − 1 (its own training rows, pseudo "
        "samples and training order; the same eval rows).\n\n"
        "ROUGE-L (×100). Rows '(mean of N replicates)': mean over replicates ± between-replicate SE; Δ: method − "
        f"baseline, 95% interval of a two-level paired bootstrap ({stats['bootstrap_resamples']} resamples of the "
        "replicates, then of the eval rows within each task), two-sided p; 'within noise' where it holds 0.\n\n"
        + to_markdown_table(table) + "\n\n"
        "Does each method forget? Its BWT with a 95% interval of the same two-level bootstrap (per-row "
        "differences a[n][i] − a[i][i]; one replicate: over the eval rows only):\n\n"
        + forgetting_table([scores for _, scores in loaded], resamples=stats["bootstrap_resamples"], seed=base_seed)
        + "\n\n"
        "Which component of SERS carries a difference (`benchmarks/components.py`, pooled the same way):\n\n"
        + component_table([scores for _, scores in loaded], resamples=stats["bootstrap_resamples"], seed=base_seed)
        + "\n\n"
        "SERS against every method, pooled over the replicates that ran both (one replicate: intervals over "
        "the eval rows only):\n\n"
        + against_table([scores for _, scores in loaded], resamples=stats["bootstrap_resamples"], seed=base_seed) + "\n")
    print((out_dir / "pooled.md").read_text())


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
        "The regulariser's pull against the task loss, per step before clipping (adapter/loss.jsonl):":
            [line for path in sorted(run.glob("order1/*/stage*/adapter/loss.jsonl")) if (line := gradient_line(path))],
        "Task similarity (W, λ) per stage:":
            [f"- {s['method']} stage {s['stage']} ({s['task']}): W = {s['W']}, λ = {s['lambda']:.3f}" for s in sims],
        "Labels θt gave the selected pseudo inputs (rehearsal_summary.json), per method and stage:":
            [rehearsal_line(path) for path in sorted(run.glob("order1/*/stage*/rehearsal_summary.json"))],
        "Self-evolution on held-back real rows (evolution_probe.json: labelled as the pseudo inputs are):":
            [probe_line(path) for path in sorted(run.glob("order1/*/stage*/evolution_probe.json"))],
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
