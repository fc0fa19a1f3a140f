"""The training stage (`sers.training.train_stage` with `sers.regularisers`) against golden outputs.

tests/golden/stage_equivalence/ holds what the stage code wrote before it was rebuilt from parts
(commit 8854f84's train_stage, 31 keyword arguments): each case's adapter weights, its loss.jsonl and
the EWC Fisher, on the tiny model, one thread. The rebuilt stage must reproduce them: on this machine
they are byte-identical; the test allows float tolerance (rtol 1e-5, atol 1e-7) so that another CPU's
kernels do not fail it. Cases: a first stage; SERS's penalty (λ 0.3, fractional epochs, gradient
accumulation); its research variant (anchored at the previous adapter, summed, scaled, only above
λmin, grouped batches, no shared prefix, gradient checkpointing); EWC, L2, LwF; O-LoRA over two and
three blocks; LoRA dropout 0.1 (a first stage, the penalty, LwF), whose draws follow the loading order.

Regenerate only when a behaviour change is intended: `.venv/bin/python tests/test_stage_equivalence.py DIR`
writes the current outputs to DIR to compare or copy over.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sers.models import LoraShape  # noqa: E402
from sers.regularisers import WassersteinPenalty, baseline_from_config  # noqa: E402
from sers.training import DataMix, Schedule, StageSpec, TrainRow, estimate_fisher, train_stage  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import FAST_TRAINING, build_tiny, sample_rows  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "stage_equivalence"
F = FAST_TRAINING


def rows(task: str, n: int, replay: bool = False) -> list[TrainRow]:
    return [TrainRow(r.full_prompt, r.output, replay) for r in sample_rows(task)[:n]]


def run_cases(model: str, work: Path) -> dict[str, Path]:
    """Every case's stage folder (and work/fisher.safetensors), trained in order."""
    stage2 = rows("qa", 8) + rows("sa", 4, replay=True)
    lora = LoraShape(F["lora_r"], F["lora_alpha"], F["lora_dropout"], F["target_modules"])

    def run(name, data_rows, prev, regularisers=None, schedule=None, group_batches=False, lora=lora, **spec):
        spec = {"shared_prefix": F["shared_prefix"], "seed": F["seed"], "device": F["device"], "dtype": F["dtype"],
                **spec}
        schedule = Schedule(F["lr"], F["epochs"], F["batch_size"], F["grad_accum"], F["max_grad_norm"],
                            F["warmup_ratio"]) if schedule is None else schedule
        data = DataMix(data_rows, F["prompt_format"], F["max_prompt_tokens"], F["max_target_tokens"], group_batches)
        train_stage(StageSpec(model, None if prev is None else str(prev), lora, schedule, **spec), data,
                    str(work / name), regularisers)
        return work / name

    first = run("stage1", rows("sa", 8), None)
    fisher = work / "fisher.safetensors"
    estimate_fisher(model, str(first), rows("sa", 3), str(fisher), max_prompt_tokens=64, max_target_tokens=16,
                    device="cpu", dtype="float32")
    penalty = WassersteinPenalty(lam=0.3, lambda_min=0.15)
    base = lambda section: [WassersteinPenalty(), baseline_from_config(section)]  # noqa: E731
    olora = {"kind": "olora", "lambda1": 0.5, "lambda2": 0.1, "orthogonal_matrix": "lora_A"}
    cases = {
        "stage1": first,
        "sers": run("sers", stage2, first, [penalty], Schedule(F["lr"], 1.5, F["batch_size"], 2, F["max_grad_norm"])),
        "sers_variant": run("sers_variant", stage2, first,
                            [WassersteinPenalty(0.3, 0.15, True, anchor="previous", reduction="sum", scale=0.5)],
                            group_batches=True, shared_prefix=False, gradient_checkpointing=True),
        "ewc": run("ewc", stage2, first, base({"kind": "ewc", "lambda": 1e4, "fisher": str(fisher), "fisher_rows": 3})),
        "l2": run("l2", stage2, first, base({"kind": "l2", "lambda": 0.5})),
        "lwf": run("lwf", stage2, first, base({"kind": "lwf", "lambda": 1.0, "temperature": 2.0})),
        "olora": run("olora", stage2, first, base(olora)),
    }
    cases["olora3"] = run("olora3", rows("sum", 8), cases["olora"],
                          base({**olora, "orthogonal_matrix": "lora_B", "form": "squared"}))
    # LoRA dropout draws from the global generator: the loading order (LwF's teacher included) must not move
    dropout = LoraShape(F["lora_r"], F["lora_alpha"], 0.1, F["target_modules"])
    cases["dropout1"] = run("dropout1", rows("sa", 8), None, lora=dropout)
    cases["dropout2"] = run("dropout2", stage2, cases["dropout1"], [penalty], lora=dropout)
    cases["dropout_lwf"] = run("dropout_lwf", stage2, cases["dropout1"],
                               base({"kind": "lwf", "lambda": 1.0, "temperature": 2.0}), lora=dropout)
    return cases


def test_rebuilt_stage_reproduces_the_golden_outputs(tmp_path_factory):
    from safetensors.torch import load_file

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the golden outputs were written with one thread
    try:
        work = tmp_path_factory.mktemp("equivalence")
        cases = run_cases(str(build_tiny(tmp_path_factory)), work)
    finally:
        torch.set_num_threads(threads)
    files = [(work / "fisher.safetensors", GOLDEN / "fisher.safetensors")]
    files += [(d / "adapter_model.safetensors", GOLDEN / f"{name}.safetensors") for name, d in cases.items()]
    for got_path, want_path in files:
        got, want = load_file(str(got_path)), load_file(str(want_path))
        assert got.keys() == want.keys(), got_path
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7, msg=f"{want_path.name} {key}")
    for name, d in cases.items():
        got = [json.loads(line) for line in (d / "loss.jsonl").read_text().splitlines()]
        want = [json.loads(line) for line in (GOLDEN / f"{name}.loss.jsonl").read_text().splitlines()]
        assert [list(r) for r in got] == [list(r) for r in want], name  # the same keys, in the same order
        assert got == [{k: pytest.approx(v, rel=1e-5, abs=1e-9) for k, v in r.items()} for r in want], name
    blocks = json.loads((cases["olora3"] / "olora_blocks.json").read_text())["blocks"]
    assert blocks == [[0, 4], [4, 8], [8, 12]]
    config = json.loads((cases["ewc"] / "train_config.json").read_text())
    assert config["baseline"]["kind"] == "ewc" and config["lam"] == 0.0 and config["penalty_applies"]


if __name__ == "__main__":  # write the current outputs (to regenerate the golden files on purpose)
    import shutil

    class _Dirs:
        def __init__(self, root: Path):
            self.root = root

        def mktemp(self, name: str) -> Path:
            (self.root / name).mkdir(parents=True, exist_ok=True)
            return self.root / name

    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    work = out / "work"
    cases = run_cases(str(build_tiny(_Dirs(work))), work / "stages")
    shutil.copy(work / "stages" / "fisher.safetensors", out / "fisher.safetensors")
    for name, d in cases.items():
        shutil.copy(d / "adapter_model.safetensors", out / f"{name}.safetensors")
        shutil.copy(d / "loss.jsonl", out / f"{name}.loss.jsonl")
