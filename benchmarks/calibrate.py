"""Calibrate a regulariser's strength on the validation split, never on the benchmark's eval rows.

    .venv/bin/python benchmarks/calibrate.py ewc lambda 1e3 1e4 1e5 1e6 [--layer SETTING.yaml …]

One run per value (`results/calibrate-<method>-<value>`: the forgetting benchmark's config, the --layer
files, then `benchmarks/forgetting-settings/validation.yaml`, which scores every model on the tasks'
spare rows), the method alone. The value with the highest validation AR (the final model's
mean score over the tasks) is chosen; the table of every value's AR and BWT, and the choice, go to
benchmarks/results/calibrate-<method>-<date>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VALIDATION = "benchmarks/forgetting-settings/validation.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", help="a method with a section under `baselines` (ewc, l2, lwf, olora)")
    ap.add_argument("key", help="the key of that section to calibrate, e.g. lambda")
    ap.add_argument("values", nargs="+", type=float)
    ap.add_argument("--layer", action="append", default=[], metavar="YAML")
    ap.add_argument("--cores", default="2")
    args, extra = ap.parse_known_args()
    snakemake = str(Path(sys.executable).parent / "snakemake")
    rows = []
    for value in args.values:
        # a run name takes no "+": 1e+06 → 1e06
        run = f"calibrate-{args.method}-{args.key}-{format(value, 'g').replace('e+', 'e')}"
        layer = REPO / "results" / run / "calibration.yaml"
        layer.parent.mkdir(parents=True, exist_ok=True)
        layer.write_text(yaml.safe_dump({"baselines": {args.method: {args.key: value}}}))
        subprocess.run([snakemake, "--cores", args.cores, "--max-threads", "1", "--configfile", "benchmarks/forgetting.yaml",
                        *args.layer, VALIDATION, str(layer), "--config", f"run={run}", f"methods=[{args.method}]",
                        *extra], cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        metrics = next((REPO / "results" / run).glob(f"*/{args.method}/metrics.json"))  # the one order
        rows.append((value, json.loads(metrics.read_text())))
    best = max(rows, key=lambda r: r[1]["ar"])
    lines = [f"# Calibrating {args.method}.{args.key} on the validation split, {date.today()}", "",
             f"`benchmarks/calibrate.py {' '.join(sys.argv[1:])}`: config `benchmarks/forgetting.yaml`"
             + "".join(f" + `{x}`" for x in args.layer) + f" + `{VALIDATION}` (each task's 20 spare rows).", "",
             f"| {args.key} | validation AR | validation BWT |", "|---|---|---|"]
    for value, m in rows:
        lines.append(f"| {value:g} | {m['ar']:.2f} ± {m['ar_se']:.2f} | {m['bwt']:.2f} ± {m['bwt_se']:.2f} |")
    lines += ["", f"Chosen: {args.key} = {best[0]:g} (highest validation AR)."]
    out = REPO / f"benchmarks/results/calibrate-{args.method}-{date.today()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
