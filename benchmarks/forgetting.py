"""Run the forgetting benchmark (benchmarks/forgetting.yaml) and write its table with machine,
date and wall time to benchmarks/results/forgetting-<date>.md.

    .venv/bin/python benchmarks/forgetting.py [--cores 2] [extra snakemake args]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", default="2")
    args, extra = ap.parse_known_args()
    snakemake = str(Path(sys.executable).parent / "snakemake")
    start = time.time()
    subprocess.run([snakemake, "--cores", args.cores, "--configfile", "benchmarks/forgetting.yaml", *extra],
                   cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.time() - start
    run = REPO / "results/forgetting"
    table = (run / "summary/methods.md").read_text()
    metrics = {p.parent.name: json.loads(p.read_text()) for p in sorted(run.glob("order1/*/metrics.json"))}
    sims = [json.loads(p.read_text()) for p in sorted(run.glob("order1/*/stage*/similarity.json"))]
    lines = [f"# Forgetting benchmark, {date.today()}", "",
             f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores; wall time {wall / 60:.1f} min "
             f"(`benchmarks/forgetting.py`, config `benchmarks/forgetting.yaml`).", "", table, "",
             "Per-task forgetting (max earlier score − final score):", ""]
    for method, m in metrics.items():
        lines.append(f"- {method}: " + ", ".join(f"{t} {v:.1f}" for t, v in m["forgetting"].items()))
    lines += ["", "Task similarity (W, λ) per stage:", ""]
    lines += [f"- {s['method']} stage {s['stage']} ({s['task']}): W = {s['W']}, λ = {s['lambda']:.3f}" for s in sims]
    out = REPO / f"benchmarks/results/forgetting-{date.today()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
