"""benchmarks/compare_runs.py: two runs of one config side by side (the GPU session's CUDA vs CPU check)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from _tiny import REPO

_spec = importlib.util.spec_from_file_location("compare_runs", REPO / "benchmarks" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def write_run(root, losses, predictions, matrix_value, rehearsal_rows):
    stage = root / "order1" / "seq" / "stage1-sa"
    (stage / "adapter").mkdir(parents=True)
    (stage / "adapter" / "loss.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": v}) + "\n"
                                                          for i, v in enumerate(losses)))
    (stage / "eval_generations.jsonl").write_text("".join(
        json.dumps({"task": "sa", "id": f"r{i}", "prediction": p}) + "\n" for i, p in enumerate(predictions)))
    (stage / "rehearsal.jsonl").write_text("{}\n" * rehearsal_rows)
    (root / "order1" / "seq" / "matrix.csv").write_text(f"stage,sa\nstage1-sa,{matrix_value}\n")
    return root


def test_compare_runs_hand_numbers(tmp_path):
    a = write_run(tmp_path / "cpu", [2.0, 1.0], ["yes", "no", "maybe"], 40.0, 3)
    b = write_run(tmp_path / "cuda", [2.02, 1.0], ["yes", "no", "perhaps"], 37.5, 4)
    (a / "order1" / "ssr").mkdir()
    (a / "order1" / "ssr" / "matrix.csv").write_text("stage,sa\nstage1-sa,1\n")  # only in a
    c = compare_runs.compare_runs(a, b)
    assert c["losses"][0]["max_relative_difference"] == pytest.approx(0.01)
    assert c["predictions"] == [{"model": "order1/seq/stage1-sa", "rows": 3, "identical": 2}]
    assert c["rehearsal"] == [{"stage": "order1/seq/stage1-sa", "rows": (3, 4)}]
    assert c["matrices"] == [{"method": "order1/seq", "max_abs_difference": 2.5}]
    assert c["missing"]["matrix.csv"] == 1
    text = compare_runs.markdown(c)
    assert "largest relative difference at any step 1.00%" in text and "2 of 3 rows identical" in text
    assert "1 with another row count" in text and "2.50 ROUGE-L points" in text and "1 × matrix.csv" in text
