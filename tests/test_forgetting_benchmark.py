"""benchmarks/forgetting.py: replicate run folders pooled into one table (hand-made run folders)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import forgetting  # noqa: E402

TASKS = ["a", "b"]


def write_run(root: Path, method_final_a: dict[str, list[float]]) -> Path:
    """A run folder of order1 = [a, b]: stage 1 (shared) scores a at 80 on every row; each method's
    stage 2 scores a at the given per-row values and b at 50."""
    def cell(folder: Path, stage: int, task: str, scores: list[float], method):
        (folder / "eval").mkdir(parents=True, exist_ok=True)
        summary = {"order": "order1", "method": method, "stage": stage, "stage_task": TASKS[stage - 1], "task": task}
        (folder / f"eval/{task}.json").write_text(json.dumps(summary))
        (folder / f"eval/{task}.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "rouge_l": x}) + "\n"
                                                           for i, x in enumerate(scores)))
    cell(root / "order1/stage1-a", 1, "a", [80.0] * 4, None)
    for method, final_a in method_final_a.items():
        cell(root / f"order1/{method}/stage2-b", 2, "a", final_a, method)
        cell(root / f"order1/{method}/stage2-b", 2, "b", [50.0] * 4, method)
        bwt = sum(final_a) / 4 - 80
        (root / f"order1/{method}/metrics.json").write_text(json.dumps(
            {"order": "order1", "method": method, "tasks": TASKS, "ar": (sum(final_a) / 4 + 50) / 2, "ar_se": 1.0,
             "bwt": bwt, "bwt_se": 1.0, "fwt": None, "fwt_se": None}))
    return root


def test_replicates_pool_into_one_row_with_a_two_level_interval(tmp_path):
    rep1 = write_run(tmp_path / "r1", {"seq": [60, 70, 60, 70], "sers": [70, 80, 70, 80]})  # sers +10 per row
    rep2 = write_run(tmp_path / "r2", {"seq": [60, 70, 60, 70], "sers": [62, 72, 62, 72]})  # sers +2 per row
    loaded = [forgetting.run_scores_of(rep1), forgetting.run_scores_of(rep2)]
    table, numeric = forgetting.pooled_table(loaded, ["seq"], 400, 0)
    assert list(numeric["order"].unique()) == ["order1-rep1", "order1-rep2", "order1 (mean of 2 replicates)"]
    pooled = numeric[(numeric["order"] == "order1 (mean of 2 replicates)") & (numeric["method"] == "sers")].iloc[0]
    assert pooled["bwt"] == pytest.approx(-15 + 6)  # mean of −5 and −13
    assert pooled["d_bwt_vs_seq"] == pytest.approx(6.0)
    # each replicate alone is decisive (+10, +2 on every row); pooled, the interval spans the two seeds
    assert pooled["d_bwt_vs_seq_lo"] == pytest.approx(2.0) and pooled["d_bwt_vs_seq_hi"] == pytest.approx(10.0)
    assert "mean" not in set(table["order"])


def test_sers_against_every_method_pools_only_the_replicates_that_ran_both(tmp_path):
    """`ewc` ran in replicate 1 only: sers − ewc is that replicate's paired difference (+4 on every row,
    an interval of one point); sers − seq pools both replicates (+10 and +2 per row: the interval spans them)."""
    rep1 = write_run(tmp_path / "r1", {"seq": [60, 70, 60, 70], "sers": [70, 80, 70, 80], "ewc": [66, 76, 66, 76]})
    rep2 = write_run(tmp_path / "r2", {"seq": [60, 70, 60, 70], "sers": [62, 72, 62, 72]})
    table = forgetting.against_table([forgetting.run_scores_of(rep1)[1], forgetting.run_scores_of(rep2)[1]],
                                     resamples=400)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in table.splitlines()[2:]}
    assert set(rows) == {"sers − seq", "sers − ewc"}
    assert rows["sers − ewc"][0] == "1" and rows["sers − ewc"][2].startswith("+4.00 [+4.00, +4.00]")
    assert rows["sers − seq"][0] == "2" and rows["sers − seq"][2].startswith("+6.00 [+2.00, +10.00]")
