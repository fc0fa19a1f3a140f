"""benchmarks/gpu_report.py: a device session's folder becomes Markdown with each figure against its target."""
from __future__ import annotations

import importlib.util
import json

from _tiny import REPO

_spec = importlib.util.spec_from_file_location("gpu_report", REPO / "benchmarks" / "gpu_report.py")
gpu_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_report)

BLEND = {"bench": "blend", "rows": 32, "reference_rows": 4, "identical_rows": 4, "ours_tokens_per_s": 400.0,
         "reference_tokens_per_s": 10.0, "speedup_vs_reference": 40.0, "plain_greedy_tokens_per_s": 450.0,
         "blend_vs_plain_greedy": 0.89, "peft_mixed_batch_tokens_per_s": 200.0,
         "peft_mixed_batch_vs_plain_greedy": 0.44, "peft_mixed_batch_identical_rows": 32,
         "host_syncs_per_step": {"plain_greedy": 1.0, "blend_row_gate": 1.0, "blend_peft_mixed_batch": 65.0}}


def prefix(task: str, train: float, evaluation: float) -> dict:
    return {"bench": "prefix", "task": task, "rows": 32, "batch": 16, "prompt_tokens_mean": 300.0,
            "shared_prefix_tokens_mean": 250.0, "train_tokens_per_s_shared": 2000.0 * train,
            "train_tokens_per_s_plain": 2000.0, "train_speedup": train, "eval_rows_per_s_shared": 5.0,
            "eval_rows_per_s_plain": 5.0 / evaluation, "eval_speedup": evaluation, "eval_identical_rows": 32,
            "train_layouts_chosen": {"packed": 2}, "train_tokens_per_s_by_layout": {
                "plain": 2000.0, "two_pass": 1000.0, "packed": 2000.0 * train, "auto": 2000.0 * train}}


def test_report_sets_each_figure_against_its_target(tmp_path):
    ends = {"bench": "blend_ends", "rows": 32, "alpha1_identical_to_base_rows": 32, "alpha0_identical_to_tuned_rows": 30}
    shapes = [{"bench": "layout_shapes", "shape": "uniform long suffixes", "rows": 16, "shared_prefix_tokens": 60,
               "chosen": "two_pass", "counted_packed_vs_two_pass": 1.18, "measured_packed_vs_two_pass": 0.9}]
    results = [BLEND, ends, prefix("pos", 2.5, 1.5), prefix("sa", 0.9, 1.1), *shapes,
               {"bench": "memory", "plain_greedy_peak_mib": 2000.0, "blend_peak_mib": 2100.0, "ratio": 1.05}]
    meta = {"date": "2026-11-27", "gpu": "NVIDIA H100 80GB HBM3", "machine": "linux", "model": "random-llama-0.92B",
            "dtype": "bfloat16", "results": results}
    (tmp_path / "generation-random-llama-0.92B-cuda.json").write_text(json.dumps(meta))
    (tmp_path / "summary.txt").write_text("step 1: exit 0 after 5 s\nstep 3: exit 124 after 200 s (time limit)\n")
    md = gpu_report.report(tmp_path)
    lines = md.splitlines()

    def row(start: str) -> str:
        return next(ln for ln in lines if ln.startswith(start))

    assert row("| blend decoding vs the reference loop").endswith("| met |")
    assert "4 of 4 rows identical" in row("| blend decoding vs the reference loop")
    assert row("| blend decoding (LoraRowGate) vs plain greedy").endswith("| met |")
    assert row("| blend decoding (peft mixed batches)").endswith("| **missed** |")
    assert row("| host syncs per decoding step, blend row gate").endswith("| met |")
    assert row("| training tokens/s, shared prefix vs not (`pos`").endswith("| met |")  # 2.5× ≥ 2×
    assert row("| greedy evaluation rows/s, shared prefix vs not (`pos`)").endswith("| **missed** |")  # 1.5× < 2×
    assert row("| training tokens/s, shared prefix vs not (`sa`").endswith("| **missed** |")  # slower on short
    assert row("| training tokens/s, two-pass layout vs plain (`pos`)").startswith(
        "| training tokens/s, two-pass layout vs plain (`pos`) | 0.50× (1000 tok/s)")
    assert row("| layout chosen per batch (`sa`)") == "| layout chosen per batch (`sa`) | packed 2 | | |"
    assert row("| packed / two-pass step time, uniform long suffixes (16 rows, 60 shared) | 0.90 (counted 1.18)").endswith(
        "| **missed** (two-pass chosen) |")  # packed was faster
    assert row("| peak memory, blend vs plain greedy").endswith("| met |")
    assert row("| blend at α = 1 vs plain greedy θ0").endswith("| met |")
    assert row("| blend at α = 0 vs plain greedy θt").endswith("| **missed** |")  # 30 of 32
    assert "step 3: exit 124 after 200 s (time limit)" in md
    assert "Step 4 did not run." in md and "Step 3 brought back no CUDA run." in md  # missing steps are said


def test_report_points_a_cut_off_step_4_to_from_log_and_compares_step_3_with_a_cpu_run(tmp_path):
    work = tmp_path / "gpu"
    (work / "tiny" / "results" / "tiny-cuda" / "order1" / "seq").mkdir(parents=True)
    (work / "step4.log").write_text('{"model": {}}\n')
    (work / "tiny" / "results" / "tiny-cuda" / "order1" / "seq" / "matrix.csv").write_text("stage,sa\ns1,1.5\n")
    md = gpu_report.report(work)
    assert "paper_cost.py --from-log" in md and "--cpu-run results/tiny-cpu" in md
    cpu = tmp_path / "tiny-cpu"
    (cpu / "order1" / "seq").mkdir(parents=True)
    (cpu / "order1" / "seq" / "matrix.csv").write_text("stage,sa\ns1,1.0\n")
    md = gpu_report.report(work, cpu)
    assert "stage × task matrices: 1 compared, largest |difference| 0.50 ROUGE-L points" in md
