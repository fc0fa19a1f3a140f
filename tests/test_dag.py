"""The DAG itself: a real tiny run, the paper preset's plan, and what a changed threshold reruns."""
import json
import time

import pytest

from sers.io import read_jsonl


def test_tiny_run_produces_selected_sets(tiny_run):
    for task in ("sa", "pe"):
        base = tiny_run.root / "results/tiny/pseudo/mask" / task
        raw = read_jsonl(base / "raw.jsonl")
        assert raw and all(r["provenance"]["seed_id"] for r in raw)
        summary = json.loads((base / "filter_summary.json").read_text())
        assert summary["raw"] == len(raw) == summary["kept"] + summary["dropped"]
        assert len(read_jsonl(base / "dropped.jsonl")) == summary["dropped"]
        selected = read_jsonl(base / "selected.jsonl")
        assert 0 < len(selected) <= 4
        kept_ids = {r["id"] for r in read_jsonl(base / "filtered.jsonl")}
        assert {r["id"] for r in selected} <= kept_ids


def test_second_run_does_nothing(tiny_run):
    out = tiny_run.snakemake("-n", "--configfile", "config/tiny.yaml")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_paper_preset_plans_every_task_and_method():
    from conftest import REPO, Workflow
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        wf = Workflow(Path(d))
        start = time.time()
        jobs = wf.planned_jobs("--configfile", "config/experiments/paper-llama2-7b.yaml")
        elapsed = time.time() - start
    synth = {(w["kind"], w["task"]) for r, w in jobs if r == "synthesize"}
    assert len(synth) == 20  # 10 tasks × {mask, icl}
    assert elapsed < 60


def test_changing_one_task_threshold_reruns_exactly_its_chain(tiny_run):
    tiny_run.write_config("sa-threshold.yaml", {"filter": {"tasks": {"sa": {"max_tokens": 399}}}})
    jobs = tiny_run.planned_jobs("--configfile", "config/tiny.yaml", "sa-threshold.yaml")
    planned = sorted((rule, w.get("kind", ""), w.get("task", "")) for rule, w in jobs if rule != "all")
    assert planned == [("embed_pseudo", "mask", "sa"), ("filter_pseudo", "mask", "sa"), ("select_pseudo", "mask", "sa")]
