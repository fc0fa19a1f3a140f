"""Where a run's time and memory went: the per-job resource records (one TSV per job) summed per rule
and per method, and the GPU-hours of the GPU rules.

A record is the table a workflow engine's job benchmark writes (Snakemake's `benchmark:` file): a
header line, then one row per repeat of the job, with at least `s` (wall seconds), `max_rss` (peak
resident memory, MB) and `cpu_time` (user + system CPU seconds); "NA" where the job ended before its
memory and CPU were sampled. The records of a run lie under one folder as `<rule>/<job>.tsv`, where
`<job>` is the job's own path (its artifact's path under the run folder, say `order1/sers/stage2-pe`):
the first path segment names the rule, and the first segment of the job that is a method's name names
the job's method (none: the job serves several methods, "shared").
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from sers.errors import SersError

SHARED = "shared"  # jobs no single method owns: θ0's preparation and evaluation, pseudo chains, reports
FIELDS = ("s", "max_rss", "cpu_time")


def _number(value: str | None) -> float | None:
    if value is None or value.strip() in ("", "NA", "-"):
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def read_benchmark(path: str | os.PathLike) -> dict[str, float | None]:
    """One job's record: wall seconds, peak RSS (MB) and CPU seconds, the mean over its repeats (a job
    benchmarked with `repeat(…, n)` ran n times); a field no repeat measured is None."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise SersError(f"{path}: not a benchmark record (a header with an 's' column, then a row per repeat)")
    out: dict[str, float | None] = {}
    for field in FIELDS:
        values = [x for x in (_number(r.get(field)) for r in rows) if x is not None]
        out[field] = sum(values) / len(values) if values else None
    if out["s"] is None:
        raise SersError(f"{path}: no wall time in the record")
    return out


def collect_records(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record under `root` (`<rule>/<job>.tsv`, or `<rule>.tsv` for a rule of one job), sorted by
    path: {"rule", "job", "path", "s", "max_rss", "cpu_time"}. No folder: no records."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = []
    for path in sorted(root.rglob("*.tsv")):
        parts = path.relative_to(root).with_suffix("").parts
        rule, job = parts[0], "/".join(parts[1:])
        records.append({"rule": rule, "job": job, "path": str(path), **read_benchmark(path)})
    return records


def job_method(job: str, methods: Iterable[str]) -> str:
    """The method a job ran for: the first segment of its path that is one of `methods`, else SHARED."""
    names = set(methods)
    for segment in job.split("/"):
        if segment in names:
            return segment
    return SHARED


def _summary(group: pd.DataFrame) -> dict[str, Any]:
    rss = group["max_rss"].dropna()
    cpu = group["cpu_time"].dropna()
    return {"jobs": len(group), "wall_h": group["s"].sum() / 3600, "mean_wall_s": group["s"].mean(),
            "max_wall_s": group["s"].max(), "cpu_h": cpu.sum() / 3600 if len(cpu) else None,
            "max_rss_mb": rss.max() if len(rss) else None}


def _frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    columns = ["rule", "job", "s", "max_rss", "cpu_time"]
    frame = pd.DataFrame([{k: r.get(k) for k in columns} for r in records], columns=columns)
    for field in FIELDS:
        frame[field] = pd.to_numeric(frame[field], errors="coerce")
    return frame


def usage_by_rule(records: Sequence[Mapping[str, Any]], gpu_rules: Iterable[str] = ()) -> pd.DataFrame:
    """Per rule: jobs, wall hours (summed), mean and longest job (s), CPU hours (summed), the largest peak
    RSS (MB) of any of its jobs, and whether it is a GPU rule; the longest-running rules first."""
    gpu = set(gpu_rules)
    columns = ["rule", "gpu", "jobs", "wall_h", "mean_wall_s", "max_wall_s", "cpu_h", "max_rss_mb"]
    frame = _frame(records)
    rows = [{"rule": rule, "gpu": rule in gpu, **_summary(group)} for rule, group in frame.groupby("rule")]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["wall_h", "rule"], ascending=[False, True], ignore_index=True)


def usage_by_method(records: Sequence[Mapping[str, Any]], methods: Sequence[str], gpu_rules: Iterable[str] = (),
                    rule_methods: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per method (in the order of `methods`, then SHARED; only those with records): jobs, wall hours, of
    them on GPU rules (GPU-hours when each GPU job holds one GPU), CPU hours and the largest peak RSS (MB).
    A job's method is `job_method(job, methods)`, or `rule_methods[rule]` for a rule whose every job
    serves one method though its path names none."""
    gpu, rule_methods = set(gpu_rules), dict(rule_methods or {})
    frame = _frame(records)
    frame["method"] = [rule_methods.get(rule) or job_method(job, methods)
                       for rule, job in zip(frame["rule"], frame["job"])]
    frame["gpu_s"] = [s if rule in gpu else 0.0 for rule, s in zip(frame["rule"], frame["s"])]
    rows = []
    for method in [*methods, SHARED]:
        group = frame[frame["method"] == method]
        if len(group):
            summary = _summary(group)
            rows.append({"method": method, "jobs": summary["jobs"], "wall_h": summary["wall_h"],
                         "gpu_wall_h": group["gpu_s"].sum() / 3600, "cpu_h": summary["cpu_h"],
                         "max_rss_mb": summary["max_rss_mb"]})
    return pd.DataFrame(rows, columns=["method", "jobs", "wall_h", "gpu_wall_h", "cpu_h", "max_rss_mb"])


def gpu_hours(records: Sequence[Mapping[str, Any]], gpu_rules: Iterable[str]) -> dict[str, Any]:
    """GPU-hours of a run from its records: every job of a GPU rule held one GPU for its wall time.
    {"rows": [{"rule", "jobs", "hours"}] (most hours first), "total_hours"}."""
    by_rule = usage_by_rule([r for r in records if r["rule"] in set(gpu_rules)], gpu_rules)
    rows = [{"rule": r.rule, "jobs": int(r.jobs), "hours": float(r.wall_h)} for r in by_rule.itertuples()]
    return {"rows": rows, "total_hours": sum(r["hours"] for r in rows)}


def usage_markdown(by_rule: pd.DataFrame, by_method: pd.DataFrame) -> str:
    """The two tables of `usage_by_rule` and `usage_by_method` as Markdown, with what their columns mean."""
    from sers.metrics import to_markdown_table

    if by_rule.empty:
        return "No resource records: no job of this run has written one yet.\n"
    rule = by_rule.assign(gpu=by_rule["gpu"].map({True: "yes", False: ""}))
    return ("Where the run's time and memory went, from every job's record (wall time, CPU time, peak RSS). "
            "Wall and CPU hours are summed over a rule's jobs (jobs that ran side by side overlap); max RSS "
            "is the largest of any one job, in MB.\n\n"
            + to_markdown_table(rule) + "\n"
            "Per method: its jobs' sums; `gpu_wall_h` is the part on GPU rules (GPU-hours, one GPU per job). "
            f"`{SHARED}`: jobs that serve several methods (θ0's preparation and evaluation, the shared first "
            "stage, pseudo chains, the report).\n\n"
            + to_markdown_table(by_method))
