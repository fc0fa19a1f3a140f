"""Calibrate a regulariser's strength on the validation split, never on the benchmark's eval rows.

    .venv/bin/python benchmarks/calibrate.py ewc lambda 1e3 1e4 1e5 1e6 [--layer SETTING.yaml …]

One run per value (`results/calibrate-<method>-<key>-<value>`: the forgetting benchmark's config, the
--layer files, then `benchmarks/forgetting-settings/validation.yaml`, which scores every model on the
tasks' spare rows), the method alone. The value with the highest validation AR (the final model's
mean score over the tasks) is chosen; the table of every value's AR and BWT, and the choice, go to
benchmarks/results/calibrate-<method>-<date>.md.

The first stage trains on task 1 alone, with no regulariser, and is shared by every method (the
workflow's `train_first_stage`), so it cannot depend on the calibrated key: every run after the first
starts from a copy of the first run's stage-1 folders (adapter and evaluation, modification times kept)
instead of training it again. The method's own stage-1 artefacts (EWC's Fisher) are not copied, since
the calibrated key may shape them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VALIDATION = "benchmarks/forgetting-settings/validation.yaml"


def run_name(method: str, key: str, value: float) -> str:
    # a run name takes no "+": 1e+06 → 1e06
    return f"calibrate-{method}-{key}-{format(value, 'g').replace('e+', 'e')}"


def share_first_stage(first_run: Path, run: Path) -> list[Path]:
    """Copy `first_run`'s shared stage-1 folders (`<order>/stage1-<task>/`) into `run`, keeping the
    files' modification times so Snakemake finds them up to date; a folder `run` already has is left
    as it is. Each folder is copied beside its place and then renamed, so an interrupted copy leaves no
    half-copied stage 1 that Snakemake would take for finished. Returns the folders copied."""
    copied = []
    for stage1 in sorted(first_run.glob("*/stage1-*/")):
        target = run / stage1.relative_to(first_run)
        if (stage1 / "adapter").is_dir() and not target.exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted copy
            shutil.copytree(stage1, partial, copy_function=shutil.copy2)
            partial.rename(target)
            copied.append(target)
    return copied


def choose(rows: list[tuple[float, dict]]) -> tuple[float, dict]:
    """The value with the highest validation AR; on a tie, the first (the grid's order)."""
    return max(rows, key=lambda r: r[1]["ar"])


def report(method: str, key: str, rows: list[tuple[float, dict]], command: str, layers: list[str]) -> str:
    best = choose(rows)
    lines = [f"# Calibrating {method}.{key} on the validation split, {date.today()}", "",
             f"`{command}`: config `benchmarks/forgetting.yaml`" + "".join(f" + `{x}`" for x in layers)
             + f" + `{VALIDATION}` (each task's 20 spare rows).", "",
             f"| {key} | validation AR | validation BWT |", "|---|---|---|"]
    for value, m in rows:
        lines.append(f"| {value:g} | {m['ar']:.2f} ± {m['ar_se']:.2f} | {m['bwt']:.2f} ± {m['bwt_se']:.2f} |")
    lines += ["", f"Chosen: {key} = {best[0]:g} (highest validation AR)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", help="a method with a section under `baselines` (ewc, l2, lwf, olora)")
    ap.add_argument("key", help="the key of that section to calibrate, e.g. lambda")
    ap.add_argument("values", nargs="+", type=float)
    ap.add_argument("--layer", action="append", default=[], metavar="YAML")
    ap.add_argument("--cores", default="2")
    ap.add_argument("--force", action="store_true", help="overwrite today's results file of this method")
    args, extra = ap.parse_known_args()
    out = REPO / f"benchmarks/results/calibrate-{args.method}-{date.today()}.md"
    if out.exists() and not args.force:
        sys.exit(f"{out.relative_to(REPO)} exists: pass --force to overwrite it")
    snakemake = str(Path(sys.executable).parent / "snakemake")
    rows = []
    first = REPO / "results" / run_name(args.method, args.key, args.values[0])
    for value in args.values:
        run = REPO / "results" / run_name(args.method, args.key, value)
        layer = run / "calibration.yaml"
        layer.parent.mkdir(parents=True, exist_ok=True)
        layer.write_text(yaml.safe_dump({"baselines": {args.method: {args.key: value}}}))
        if run != first:
            for folder in share_first_stage(first, run):
                print(f"note: {folder.relative_to(REPO)} copied from {first.name} (stage 1 has no regulariser)")
        subprocess.run([snakemake, "--cores", args.cores, "--max-threads", "1", "--configfile", "benchmarks/forgetting.yaml",
                        *args.layer, VALIDATION, str(layer), "--config", f"run={run.name}", f"methods=[{args.method}]",
                        *extra], cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        metrics = next(run.glob(f"*/{args.method}/metrics.json"))  # the one order
        rows.append((value, json.loads(metrics.read_text())))
    out.write_text(report(args.method, args.key, rows, f"benchmarks/calibrate.py {' '.join(sys.argv[1:])}", args.layer))
    print(out.read_text())


if __name__ == "__main__":
    main()
