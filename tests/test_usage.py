"""sers.usage: a run's per-job resource records (Snakemake benchmark TSVs, written here by hand) summed
per rule and per method, and the GPU-hours of the GPU rules."""
from __future__ import annotations

import pandas as pd
import pytest

from sers.errors import SersError
from sers.usage import (
    SHARED,
    collect_records,
    gpu_hours,
    job_method,
    read_benchmark,
    usage_by_method,
    usage_by_rule,
    usage_markdown,
)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def record(root, relative: str, *rows: tuple) -> None:
    """A benchmark TSV at root/relative: one row (s, max_rss, cpu_time) per repeat."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n" for s, rss, cpu in rows))


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "benchmarks"
    record(root, "train_first_stage/order1/stage1-sa.tsv", (3600, 1000.0, 3000))
    record(root, "train_stage/order1/sers/stage2-pe.tsv", (7200, 2000.0, 7000))
    record(root, "train_stage/order1/seq/stage2-pe.tsv", (1800, 1500.0, 1700))
    record(root, "evaluate/order1/sers/stage2-pe.tsv", (360, 800.0, 300))
    record(root, "evaluate/base.tsv", (720, 900.0, 700))
    record(root, "score_eval/order1/sers/stage2-pe.tsv", (2, "NA", "NA"))  # ended before it was sampled
    record(root, "synthesize/pseudo/mask/sa.tsv", (1000, 1200.0, 900))
    record(root, "real_rehearsal/real/sa.tsv", (1, 50.0, 1))
    record(root, "metrics/order1/sers.tsv", (3, 100.0, 2), (5, 120.0, 4))  # benchmarked twice (repeat)
    record(root, "plots.tsv", (30, 300.0, 25))
    return root


GPU = ("train_first_stage", "train_stage", "evaluate", "synthesize")


def test_a_record_is_the_mean_of_its_repeats_and_NA_is_none(run):
    assert read_benchmark(run / "metrics/order1/sers.tsv") == {"s": 4.0, "max_rss": 110.0, "cpu_time": 3.0}
    assert read_benchmark(run / "score_eval/order1/sers/stage2-pe.tsv") == {"s": 2.0, "max_rss": None,
                                                                            "cpu_time": None}
    (run / "broken.tsv").write_text("nothing here\n")
    with pytest.raises(SersError, match="not a benchmark record"):
        read_benchmark(run / "broken.tsv")


def test_records_are_named_by_rule_and_job_path(run, tmp_path):
    records = collect_records(run)
    assert [(r["rule"], r["job"]) for r in records] == [
        ("evaluate", "base"), ("evaluate", "order1/sers/stage2-pe"), ("metrics", "order1/sers"), ("plots", ""),
        ("real_rehearsal", "real/sa"), ("score_eval", "order1/sers/stage2-pe"), ("synthesize", "pseudo/mask/sa"),
        ("train_first_stage", "order1/stage1-sa"), ("train_stage", "order1/seq/stage2-pe"),
        ("train_stage", "order1/sers/stage2-pe")]
    assert collect_records(tmp_path / "no-such-folder") == []


def test_a_jobs_method_is_the_first_method_named_in_its_path():
    methods = ["seq", "sers", "mtl"]
    assert job_method("order1/sers/stage2-pe", methods) == "sers"
    assert job_method("mtl/stage1-all", methods) == "mtl"
    assert job_method("order1/stage1-sa", methods) == SHARED  # the first stage, shared by the methods
    assert job_method("base", methods) == SHARED
    assert job_method("", methods) == SHARED


def test_per_rule_sums_wall_and_cpu_and_takes_the_largest_peak(run):
    table = usage_by_rule(collect_records(run), GPU).set_index("rule")
    assert list(table.index[:4]) == ["train_stage", "train_first_stage", "evaluate", "synthesize"]  # most hours first
    stage = table.loc["train_stage"]
    assert stage.jobs == 2 and bool(stage.gpu)
    assert stage.wall_h == pytest.approx(2.5) and stage.cpu_h == pytest.approx(8700 / 3600)
    assert stage.mean_wall_s == pytest.approx(4500) and stage.max_wall_s == 7200 and stage.max_rss_mb == 2000
    score = table.loc["score_eval"]
    assert score.jobs == 1 and not score.gpu and score.wall_h == pytest.approx(2 / 3600)
    assert pd.isna(score.max_rss_mb) and pd.isna(score.cpu_h)  # not measured: blank, not 0


def test_per_method_sums_its_jobs_and_the_shared_ones_apart(run):
    table = usage_by_method(collect_records(run), ["seq", "sers", "replay"], GPU, {"real_rehearsal": "replay"})
    assert list(table["method"]) == ["seq", "sers", "replay", SHARED]
    by = table.set_index("method")
    # sers: its stage (7200 s), evaluation (360), scoring (2), metrics (4)
    assert by.loc["sers", "jobs"] == 4
    assert by.loc["sers", "wall_h"] == pytest.approx((7200 + 360 + 2 + 4) / 3600)
    assert by.loc["sers", "gpu_wall_h"] == pytest.approx((7200 + 360) / 3600)
    assert by.loc["sers", "max_rss_mb"] == 2000
    assert by.loc["replay", "jobs"] == 1  # real_rehearsal's path names no method: the rule's
    # shared: the first stage, θ0's evaluation, synthesis, the plots
    assert by.loc[SHARED, "jobs"] == 4
    assert by.loc[SHARED, "gpu_wall_h"] == pytest.approx((3600 + 720 + 1000) / 3600)
    assert table["wall_h"].sum() == pytest.approx(usage_by_rule(collect_records(run))["wall_h"].sum())


def test_gpu_hours_of_a_real_run_and_the_markdown(run):
    records = collect_records(run)
    hours = gpu_hours(records, GPU)
    assert [r["rule"] for r in hours["rows"]] == ["train_stage", "train_first_stage", "evaluate", "synthesize"]
    assert hours["rows"][0] == {"rule": "train_stage", "jobs": 2, "hours": pytest.approx(2.5)}
    assert hours["total_hours"] == pytest.approx((3600 + 7200 + 1800 + 360 + 720 + 1000) / 3600)
    text = usage_markdown(usage_by_rule(records, GPU), usage_by_method(records, ["seq", "sers"], GPU))
    assert "| train_stage | yes | 2 | 2.50 |" in text and "| sers | 4 |" in text
    assert usage_markdown(usage_by_rule([]), usage_by_method([], ["sers"])).startswith("No resource records")
