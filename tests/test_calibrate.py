"""benchmarks/calibrate.py: the runs after the first reuse its shared stage 1; the choice and its report."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import calibrate  # noqa: E402


def touch(path: Path, text: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_later_runs_copy_the_first_runs_shared_stage_1_only(tmp_path):
    first, run = tmp_path / "calibrate-ewc-lambda-100", tmp_path / "calibrate-ewc-lambda-1000"
    touch(first / "order1/stage1-sa/adapter/adapter_model.safetensors", "weights", 1_000_000)
    touch(first / "order1/stage1-sa/eval/sa.json", "{}", 1_000_100)
    touch(first / "order1/ewc/stage1-sa/fisher.json", "{}", 1_000_200)   # the method's: may depend on the key
    touch(first / "order1/ewc/stage2-para/adapter/x", "λ-dependent", 1_000_300)
    touch(first / "order2/stage1-pe/eval/pe.json", "{}", 1_000_400)      # cut short: no adapter, not copied
    run.mkdir()

    copied = calibrate.share_first_stage(first, run)

    assert copied == [run / "order1/stage1-sa"]
    weights = run / "order1/stage1-sa/adapter/adapter_model.safetensors"
    assert weights.read_text() == "weights" and weights.stat().st_mtime == 1_000_000  # Snakemake: up to date
    assert (run / "order1/stage1-sa/eval/sa.json").stat().st_mtime == 1_000_100
    assert not (run / "order1/ewc").exists() and not (run / "order2").exists()
    assert not list(run.rglob("*.partial"))


def test_an_interrupted_copy_is_replaced_not_taken_for_finished(tmp_path):
    first, run = tmp_path / "first", tmp_path / "run"
    touch(first / "order1/stage1-sa/adapter/a", "first", 1_000_000)
    touch(run / "order1/stage1-sa.partial/adapter/half", "half", 2_000_000)
    assert calibrate.share_first_stage(first, run) == [run / "order1/stage1-sa"]
    assert sorted(p.name for p in (run / "order1/stage1-sa/adapter").iterdir()) == ["a"]
    assert not (run / "order1/stage1-sa.partial").exists()


def test_a_stage_1_the_run_already_has_is_left_as_it_is(tmp_path):
    first, run = tmp_path / "first", tmp_path / "run"
    touch(first / "order1/stage1-sa/adapter/a", "first", 1_000_000)
    touch(run / "order1/stage1-sa/adapter/a", "its own", 2_000_000)
    assert calibrate.share_first_stage(first, run) == []
    assert (run / "order1/stage1-sa/adapter/a").read_text() == "its own"


def test_the_highest_validation_ar_is_chosen_and_reported():
    def metrics(ar, bwt):
        return {"ar": ar, "ar_se": 1.0, "bwt": bwt, "bwt_se": 0.5}
    rows = [(100.0, metrics(44.3, -12.6)), (1e7, metrics(51.09, -0.06)), (1e8, metrics(51.05, -0.06))]
    assert calibrate.choose(rows)[0] == 1e7
    text = calibrate.report("ewc", "lambda", rows, "benchmarks/calibrate.py ewc lambda 100 1e7 1e8", [])
    assert "| 1e+07 | 51.09 ± 1.00 | -0.06 ± 0.50 |" in text
    assert text.rstrip().endswith("Chosen: lambda = 1e+07 (highest validation AR).")
    assert calibrate.run_name("ewc", "lambda", 1e6) == "calibrate-ewc-lambda-1e06"
