"""benchmarks/paper_cost.py: the GPU-hours estimate on made-up numbers, and its training fallback on CPU."""
from __future__ import annotations

import importlib.util
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import pytest  # noqa: E402

from _tiny import REPO  # noqa: E402

_spec = importlib.util.spec_from_file_location("paper_cost", REPO / "benchmarks" / "paper_cost.py")
paper_cost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper_cost)


def small_config() -> dict:
    from sers.config import validate_config

    return validate_config({
        "tasks": ["sa", "pe"], "orders": {"o1": ["sa", "pe"]}, "methods": ["seq", "sers", "mtl", "ewc"],
        "data": {"min_rows": {"seeds": 4, "train": 10, "replay": 3, "eval": 5}},
        "synthesis": {"mode": "prompt", "max_seeds": 0, "max_examples": 2, "retries": 1},
        "selection": {"memory": 2},
        "training": {"epochs": 2, "batch_size": 4},
        "evolution": {"se_ratio": 0.5, "hardness": "released"},
        "eval": {"max_rows": 0, "all_tasks": True, "base": True},
        "baselines": {"ewc": {"fisher_rows": 3}},
    })


def test_estimate_hand_numbers():
    measured = {"train_row_s": 1.0, "forward_row_s": 0.5, "fisher_row_s": 2.0, "eval_rows_per_s": 1.0,
                "synthesis_rows_per_s": 2.0, "label_rows_per_s": 1.0}
    config = small_config()
    est = paper_cost.estimate_gpu_hours(config, measured, paper_cost.data_sizes(config))
    seconds = {r["rule"]: r["hours"] * 3600 for r in est["rows"]}
    jobs = {r["rule"]: r["jobs"] for r in est["rows"]}
    # by hand, in seconds:
    #   synthesize (mask): 2 tasks × (4 seeds × min(2, 3) examples) = 8 rows / 2 rows/s = 4 s each
    #   train_first_stage: 10 rows × 2 epochs × 1 s
    #   train_stage (stage 2): seq 10 rows, sers 10 + 2 pseudo, ewc 10 → (10 + 12 + 10) × 2 epochs × 1 s
    #   train_mtl: 2 tasks × 10 rows × 2 epochs
    #   task_similarity (sers, stage 2): (10 new + 2 rehearsal) × 0.5 s
    #   fisher (ewc, after stage 1): 3 rows × 2 s
    #   label_rehearsal (sers, stages 1, 2): 2 θt labels + 2 × round(0.5 × 2) blend rows = 4 rows each / 1 row/s
    #   evaluate: θ0, mtl, stage 1, stage 2 × 3 methods = 6 models × 2 tasks × 5 rows / 1 row/s
    assert seconds == pytest.approx({"synthesize (mask)": 8, "train_first_stage": 20, "train_stage": 64,
                                     "train_mtl": 40, "task_similarity": 6, "fisher": 6, "label_rehearsal": 8,
                                     "evaluate": 60})
    assert jobs == {"synthesize (mask)": 2, "train_first_stage": 1, "train_stage": 3, "train_mtl": 1,
                    "task_similarity": 1, "fisher": 1, "label_rehearsal": 2, "evaluate": 6}
    assert est["total_hours"] == pytest.approx(212 / 3600)
    table = paper_cost.markdown_table(est)
    assert "| train_stage | 3 | 11 training rows × 2 epochs | 0.0178 |" in table and "**0.0589**" in table

    # unmeasured forward and Fisher passes fall back to fractions of a training row
    rough = paper_cost.estimate_gpu_hours(config, {k: v for k, v in measured.items()
                                                   if k not in ("forward_row_s", "fisher_row_s")},
                                          paper_cost.data_sizes(config))
    rough_s = {r["rule"]: r["hours"] * 3600 for r in rough["rows"]}
    assert rough_s["task_similarity"] == pytest.approx(12 * paper_cost.FALLBACK_FORWARD_OF_TRAIN_ROW)
    assert rough_s["fisher"] == pytest.approx(3 * paper_cost.FALLBACK_FISHER_OF_TRAIN_ROW)
    assert any("assumed" in a for a in rough["assumptions"])

    # training.overrides: sers's stage trains 5 epochs instead of 2 → (10 + 12·5/2 + 10)·2 s
    config["training"]["overrides"] = [{"methods": ["sers"], "set": {"epochs": 5}}]
    longer = paper_cost.estimate_gpu_hours(config, measured, paper_cost.data_sizes(config))
    train = next(r for r in longer["rows"] if r["rule"] == "train_stage")
    assert train["hours"] * 3600 == pytest.approx(10 * 2 + 12 * 5 + 10 * 2)
    assert "| train_stage | 3 | 11 training rows × 2–5 epochs |" in paper_cost.markdown_table(longer)


def test_paper_preset_job_counts_match_the_dry_run():
    """The counts `snakemake -n --configfile config/experiments/paper-llama2-7b.yaml` printed (Job stats)."""
    config = paper_cost.load_preset()
    measured = dict.fromkeys(("train_row_s", "eval_rows_per_s", "synthesis_rows_per_s", "label_rows_per_s"), 1.0)
    est = paper_cost.estimate_gpu_hours(config, measured, paper_cost.data_sizes(config))
    jobs = {r["rule"]: r["jobs"] for r in est["rows"]}
    assert jobs == {"synthesize (mask)": 10, "synthesize (icl)": 10, "train_first_stage": 3, "train_stage": 324,
                    "train_mtl": 1, "task_similarity": 81, "fisher": 27, "label_rehearsal": 150, "evaluate": 329}


def test_training_falls_back_to_checkpointing_and_micro_batches():
    import torch

    t_cfg = {"lora_r": 4, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
             "batch_size": 4, "grad_accum": 1, "max_grad_norm": 1.0}
    model, n_params = paper_cost.build_model("tiny", "cpu", "float32", t_cfg)
    assert n_params < 1_000_000
    examples = list(zip(paper_cost.random_ids(4, 24, 1024, 1), paper_cost.random_ids(4, 8, 1024, 2)))
    res = paper_cost.measure_training(model, examples, t_cfg, torch.device("cpu"), simulate_oom=1)
    tried = [(a["micro_batch"], a["grad_accum"], a["gradient_checkpointing"], a["fits"]) for a in res["attempts"]]
    assert tried == [(4, 1, False, False), (4, 1, True, True), (2, 2, False, True)]
    fits = [a for a in res["attempts"] if a["fits"]]
    assert res["chosen"] in fits and res["chosen"]["step_s"] == min(a["step_s"] for a in fits)
    # lr 0 and no dropout: checkpointed and split steps see one model and have the full batch's loss
    assert fits[0]["loss"] == pytest.approx(fits[1]["loss"], rel=1e-5)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # left off
    assert paper_cost.micro_batches(32) == [16, 8, 4, 2, 1] and paper_cost.micro_batches(12) == [6, 3, 1]


def _log_line(key: str, value: dict) -> str:
    import json

    return json.dumps({key: value})


def test_estimate_from_a_log_cut_off_before_labelling(tmp_path):
    """A device run killed by its time limit after synthesis: the estimate from its printed lines, the
    label rate taken from synthesis and said so, forward and fisher at their fallback fractions."""
    import json

    model = {"shape": "llama2-7b", "n_params": 6_738_415_616, "device": "cuda:0", "device_name": "GPU X",
             "dtype": "bfloat16"}
    lines = [
        "a warning line that is not JSON",
        _log_line("model", model),
        _log_line("training_attempt", {"micro_batch": 4, "grad_accum": 1, "gradient_checkpointing": False,
                                       "fits": False, "error": "CUDA out of memory"}),
        _log_line("training_attempt", {"micro_batch": 2, "grad_accum": 2, "gradient_checkpointing": False,
                                       "fits": True, "step_s": 8.0, "peak_gib": 70.0}),
        _log_line("evaluate", {"rows": 16, "prompt_tokens": 1024, "rows_per_s": 2.0}),
        _log_line("synthesize", {"rows": 16, "prompt_tokens": 1024, "rows_per_s": 0.5}),
    ]
    log = tmp_path / "step4.log"
    log.write_text("\n".join(lines) + "\n")
    result, notes = paper_cost.result_from_log(log)
    assert result["training"]["chosen"]["micro_batch"] == 2 and result["training"]["rows_per_step"] == 4
    assert result["generation"]["label"]["rows_per_s"] == 0.5
    assert any("label_rehearsal" in n for n in notes) and any(n.startswith("forward") for n in notes)
    out = tmp_path / "cost.json"
    paper_cost.write_estimate(result, small_config(), 1024, 512, out, notes)
    written = json.loads(out.read_text())
    assert written["measured"]["train_row_s"] == 2.0  # 8 s for 4 rows
    assert written["measured"]["forward_row_s"] is None  # the estimate falls back to a fraction
    table = out.with_suffix(".md").read_text()
    assert "| **total** |" in table and "label_rehearsal's rate was not measured" in table

    log.write_text("\n".join(lines[:-1]) + "\n")  # cut before synthesis: no estimate, the file named
    with pytest.raises(SystemExit, match="step4.log: no synthesize measurement"):
        paper_cost.result_from_log(log)


def test_gpu_hours_of_a_run_from_its_job_records(tmp_path):
    """`paper_cost.py --from-run`: the GPU rules' records of a run summed, CPU rules left out."""
    from conftest import GPU_RULES

    assert paper_cost.GPU_RULES == GPU_RULES | {"evolution_probe"}  # the preset runs no evolution probe
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, seconds in (("train_stage/o1/sers/stage2-pe", 5400), ("train_stage/o1/seq/stage2-pe", 1800),
                         ("evaluate/base", 720), ("score_eval/base", 3)):
        path = tmp_path / "benchmarks" / f"{rel}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:00\t100\t1\t1\t1\t0\t0\t50\t{seconds}\n")
    run = paper_cost.gpu_hours_of_run(tmp_path)
    assert [(r["rule"], r["jobs"]) for r in run["rows"]] == [("train_stage", 2), ("evaluate", 1)]
    assert run["total_hours"] == pytest.approx((5400 + 1800 + 720) / 3600)
    table = paper_cost.markdown_table(run)
    assert "| train_stage | 2 | 3,600 s wall | 2 |" in table and "3 records of GPU jobs" in table
    with pytest.raises(SystemExit, match="no job records"):
        paper_cost.gpu_hours_of_run(tmp_path / "elsewhere")
