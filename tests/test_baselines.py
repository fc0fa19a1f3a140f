"""The regularisation and architecture baselines (EWC, L2, LwF, O-LoRA) and replay-kmeans's selection."""
from __future__ import annotations

import copy
import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sers.baselines import (  # noqa: E402
    anchored_penalty,
    diagonal_fisher,
    distillation_kl,
    olora_terms,
    orthogonality,
    read_blocks,
    stack_state,
)
from sers.errors import SersError  # noqa: E402
from sers.selection import select_by_kmeans  # noqa: E402
from sers.training import TrainRow, estimate_fisher  # noqa: E402

from _tiny import FAST_TRAINING, liven, randomise_lora, run_stage, sample_rows, tiny_model_dir  # noqa: E402,F401

FAST = FAST_TRAINING


# ---- the terms on hand-made cases ----

def test_fisher_of_a_two_parameter_toy():
    """loss_i = ½(x_i·w − y_i)², w = (1, 2): gradients (1, 0) and (2, 2), so F = ((1+4)/2, (0+4)/2)."""
    a, b = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(2.0))
    rows = [((1.0, 0.0), 0.0), ((1.0, 1.0), 1.0)]
    losses = (lambda x=x, y=y: 0.5 * (x[0] * a + x[1] * b - y) ** 2 for x, y in rows)
    fisher, n = diagonal_fisher([("a", a), ("b", b)], losses)
    assert n == 2
    assert float(fisher["a"]) == pytest.approx(2.5) and float(fisher["b"]) == pytest.approx(2.0)
    assert a.grad is None and b.grad is None  # no gradient is left behind
    with pytest.raises(SersError):
        diagonal_fisher([("a", a)], iter(()))


def test_ewc_and_l2_terms_toward_an_anchor():
    params = [("a", torch.tensor([1.0, 3.0])), ("b", torch.tensor([2.0]))]
    anchor = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([1.0])}
    assert float(anchored_penalty(params, anchor)) == pytest.approx(1 + 4 + 1)  # Σ (p − p*)², no ½
    fisher = {"a": torch.tensor([2.5, 0.5]), "b": torch.tensor([2.0])}
    assert float(anchored_penalty(params, anchor, fisher)) == pytest.approx(2.5 * 1 + 0.5 * 4 + 2.0 * 1)
    assert float(anchored_penalty(params, {k: v.clone() for k, v in dict(params).items()}, fisher)) == 0.0
    with pytest.raises(SersError, match="Fisher"):
        anchored_penalty(params, anchor, {"a": fisher["a"]})


def test_kl_of_two_known_distributions():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    kl = distillation_kl(p.log(), q.log(), temperature=1.0)
    assert float(kl) == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    # T = 2: p stays uniform, q^(1/2) renormalised
    q2 = [math.sqrt(0.25), math.sqrt(0.75)]
    q2 = [v / sum(q2) for v in q2]
    assert float(distillation_kl(p.log(), q.log(), 2.0)) == pytest.approx(sum(0.5 * math.log(0.5 / v) for v in q2))
    # summed over positions; KL(p‖p) = 0; teacher first (KL is not symmetric)
    two = distillation_kl(torch.cat([p, p]).log(), torch.cat([q, p]).log(), 1.0)
    assert float(two) == pytest.approx(float(kl))
    assert float(distillation_kl(q.log(), p.log(), 1.0)) != pytest.approx(float(kl))


def test_orthogonality_of_known_matrices():
    a1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # two earlier rows
    assert float(orthogonality(a1, torch.tensor([[1.0, 1.0, 0.0]]))) == pytest.approx(2.0)  # |1| + |1|
    assert float(orthogonality(a1, torch.tensor([[0.0, 0.0, 3.0]]))) == 0.0  # orthogonal subspaces
    # O-LoRA's code sums |A_prev·A_newᵀ| element-wise: the product [[2, 0], [0, 0]] gives 2, its squares 4
    two_rows = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert float(orthogonality(a1, two_rows)) == pytest.approx(2.0)
    assert float(orthogonality(a1, two_rows, "squared")) == pytest.approx(4.0)
    assert float(orthogonality(a1, -two_rows)) == pytest.approx(2.0)  # a sum of |·|, not of the signed entries
    # on a stack: lora_A rows [block 1 (2 rows); block 2 (1 row)], lora_B columns likewise
    lora_a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    lora_b = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    params = [("x.lora_A.default.weight", lora_a), ("x.lora_B.default.weight", lora_b)]
    orth, norm = olora_terms(params, frozen_rank=2, matrix="lora_A")
    assert float(orth) == pytest.approx(2.0) and float(norm) == pytest.approx(2.0 ** 0.5 + 5.0 ** 0.5)  # ‖A_2‖ + ‖B_2‖
    _, norm_sq = olora_terms(params, frozen_rank=2, matrix="lora_A", form="squared")
    assert float(norm_sq) == pytest.approx(2.0 + 5.0)  # ‖A_2‖² + ‖B_2‖²
    orth_b, _ = olora_terms(params, frozen_rank=2, matrix="lora_B")
    assert float(orth_b) == pytest.approx(2.0)  # B_1ᵀ B_2 = (2, 0)
    assert float(olora_terms(params, frozen_rank=2, matrix="lora_B", form="squared")[0]) == pytest.approx(4.0)
    assert float(olora_terms(params, frozen_rank=0)[0]) == 0.0  # a first block has nothing to be orthogonal to
    with pytest.raises(SersError, match="olora.form"):
        olora_terms(params, frozen_rank=2, form="cubed")


# ---- O-LoRA's stack = the blocks summed in ----

def two_adapter_model(model_dir):
    from peft import LoraConfig, get_peft_model

    from sers.models import load_model

    torch.manual_seed(0)
    cfg = dict(task_type="CAUSAL_LM", r=4, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(liven(load_model(str(model_dir), device="cpu")), LoraConfig(**cfg), adapter_name="t1")
    model.add_adapter("t2", LoraConfig(**cfg))
    randomise_lora(model, std=0.3)
    return model


def test_saved_stack_reproduces_the_summed_blocks(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from sers.models import load_model

    model = two_adapter_model(tiny_model_dir)
    ids = torch.tensor([[5, 17, 42, 9, 300, 7]])
    model.base_model.set_adapter(["t1", "t2"])  # both blocks summed in
    with torch.no_grad():
        summed = model(input_ids=ids).logits
        model.base_model.set_adapter("t1")
        only_a = model(input_ids=ids).logits
    assert not torch.allclose(summed, only_a)  # the second block matters
    states = [get_peft_model_state_dict(model, adapter_name=n) for n in ("t1", "t2")]
    out = tmp_path / "stack"
    config = copy.deepcopy(model.peft_config["t1"])
    config.r, config.lora_alpha = 8, 32  # rank r·t, alpha·t: the scaling alpha/r is kept
    config.save_pretrained(str(out))
    save_file(stack_state(states), str(out / "adapter_model.safetensors"))
    stacked = PeftModel.from_pretrained(liven(load_model(str(tiny_model_dir), device="cpu")), str(out)).eval()
    with torch.no_grad():
        assert torch.allclose(stacked(input_ids=ids).logits, summed, atol=1e-5)
    assert read_blocks(out, 8) == [[0, 8]]  # no blocks file: one block


# ---- each baseline as a training stage ----

def rows_of(task, n):
    return [TrainRow(r.full_prompt, r.output, False) for r in sample_rows(task)[:n]]


@pytest.fixture(scope="module")
def first_stage(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines") / "stage1"
    run_stage(tiny_model_dir, out, rows_of("sa", 8), prev_adapter=None, lam=0.0, lambda_min=0.0,
                only_above_min=False, **FAST)
    return out


def second_stage(model_dir, prev, out, baseline, **over):
    run_stage(model_dir, out, rows_of("qa", 8), prev_adapter=str(prev), lam=0.0, lambda_min=0.0,
                only_above_min=False, baseline=baseline, **{**FAST, **over})
    return [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]


def test_ewc_stage_uses_the_previous_tasks_fisher(tiny_model_dir, first_stage, tmp_path):
    fisher = tmp_path / "fisher.safetensors"
    summary = estimate_fisher(str(tiny_model_dir), str(first_stage), rows_of("sa", 3), str(fisher),
                              max_prompt_tokens=64, max_target_tokens=16, device="cpu", dtype="float32")
    assert summary["n_rows"] == 3 and summary["sum"] > 0
    assert json.loads(fisher.with_suffix(".json").read_text())["n_rows"] == 3
    log = second_stage(tiny_model_dir, first_stage, tmp_path / "ewc",
                       {"kind": "ewc", "lambda": 1e4, "fisher": str(fisher)})
    assert log[0]["baseline_term"] == 0.0  # θ = θ* before the first step
    assert all(r["baseline_term"] > 0 for r in log[1:])
    assert all(r["loss"] == pytest.approx(r["ce"] + r["baseline_term"], rel=1e-5) for r in log)
    # its gradient is logged beside the task loss's: none at θ = θ*, then a pull back toward θ*
    assert log[0]["grad_norm_regulariser"] == 0.0 and all(r["grad_norm_regulariser"] > 0 for r in log[1:])
    cfg = json.loads((tmp_path / "ewc/train_config.json").read_text())
    assert cfg["baseline"]["kind"] == "ewc" and cfg["baseline"]["fisher"] == str(fisher)
    # the Fisher must match the adapter
    from safetensors.torch import load_file, save_file

    partial = dict(list(load_file(str(fisher)).items())[1:])
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(SersError, match="does not match"):
        second_stage(tiny_model_dir, first_stage, tmp_path / "bad",
                     {"kind": "ewc", "lambda": 1.0, "fisher": str(tmp_path / "partial.safetensors")})


def test_l2_stage_pulls_toward_the_previous_adapter(tiny_model_dir, first_stage, tmp_path):
    from safetensors.torch import load_file

    def moved(folder):
        a, b = load_file(str(first_stage / "adapter_model.safetensors")), load_file(str(folder / "adapter_model.safetensors"))
        return sum(float((a[k] - b[k]).pow(2).sum()) for k in a)

    free = second_stage(tiny_model_dir, first_stage, tmp_path / "free", {"kind": "l2", "lambda": 0.0})
    tied = second_stage(tiny_model_dir, first_stage, tmp_path / "l2", {"kind": "l2", "lambda": 10.0})
    assert free[0]["baseline_term"] == tied[0]["baseline_term"] == 0.0 and tied[-1]["baseline_term"] > 0
    assert moved(tmp_path / "l2") < moved(tmp_path / "free")


def test_lwf_stage_distils_from_the_previous_adapter(tiny_model_dir, first_stage, tmp_path):
    log = second_stage(tiny_model_dir, first_stage, tmp_path / "lwf", {"kind": "lwf", "lambda": 1.0, "temperature": 2.0})
    assert log[0]["baseline_term"] == pytest.approx(0.0, abs=1e-6)  # the student starts as the teacher
    assert log[-1]["baseline_term"] > 1e-6
    assert all(r["loss"] == pytest.approx(r["ce"] + r["baseline_term"], rel=1e-5) for r in log)
    files = sorted(p.name for p in (tmp_path / "lwf").iterdir())  # only the trained adapter is saved
    assert files == ["adapter_config.json", "adapter_model.safetensors", "loss.jsonl", "train_config.json"]


def test_olora_stage_saves_a_stack_with_frozen_earlier_blocks(tiny_model_dir, first_stage, tmp_path):
    from safetensors.torch import load_file

    baseline = {"kind": "olora", "lambda1": 0.5, "lambda2": 0.0, "orthogonal_matrix": "lora_A"}
    log = second_stage(tiny_model_dir, first_stage, tmp_path / "o2", baseline)
    assert log[0]["baseline_term"] > 0  # a random new A_t is not orthogonal to A_1
    out = tmp_path / "o2"
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (8, 32)
    assert json.loads((out / "olora_blocks.json").read_text())["blocks"] == [[0, 4], [4, 8]]
    prev, stack = load_file(str(first_stage / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    for k, v in prev.items():  # the first block is the previous adapter, bit for bit
        assert torch.equal(stack[k][:4] if "lora_A" in k else stack[k][:, :4], v), k
    assert any(float(stack[k][:, 4:].abs().sum()) > 0 for k in stack if "lora_B" in k)  # the new block trained
    # a third stage stacks on the stack
    second_stage(tiny_model_dir, out, tmp_path / "o3", baseline)
    assert read_blocks(tmp_path / "o3", 12) == [[0, 4], [4, 8], [8, 12]]
    third = load_file(str(tmp_path / "o3/adapter_model.safetensors"))
    assert all(torch.equal(third[k][:8] if "lora_A" in k else third[k][:, :8], v) for k, v in stack.items())
    with pytest.raises(SersError, match="O-LoRA stack"):
        second_stage(tiny_model_dir, out, tmp_path / "bad", baseline, lora_r=8)


@pytest.mark.parametrize("kind", ["ewc", "lwf", "olora"])
def test_baseline_stages_train_the_same_with_gradient_checkpointing(tiny_model_dir, first_stage, tmp_path, kind):
    """EWC's anchored term, LwF's frozen teacher adapter (run in eval mode, no grad) and O-LoRA's stacked
    adapter with its gradient hooks: the same loss and adapter with training.gradient_checkpointing."""
    from safetensors.torch import load_file

    baseline = {"ewc": {"kind": "ewc", "lambda": 1e3}, "lwf": {"kind": "lwf", "lambda": 1.0, "temperature": 2.0},
                "olora": {"kind": "olora", "lambda1": 0.5, "lambda2": 0.1, "orthogonal_matrix": "lora_A"}}[kind]
    if kind == "ewc":
        fisher = tmp_path / "fisher.safetensors"
        estimate_fisher(str(tiny_model_dir), str(first_stage), rows_of("sa", 2), str(fisher), max_prompt_tokens=64,
                        max_target_tokens=16, device="cpu", dtype="float32")
        baseline["fisher"] = str(fisher)
    logs = {on: second_stage(tiny_model_dir, first_stage, tmp_path / str(on), baseline, lora_dropout=0.1,
                             gradient_checkpointing=on) for on in (False, True)}
    assert json.loads((tmp_path / "True/train_config.json").read_text())["gradient_checkpointing"] is True
    for a, b in zip(logs[False], logs[True], strict=True):
        for key in ("loss", "ce", "baseline_term", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    off, on = (load_file(str(tmp_path / x / "adapter_model.safetensors")) for x in ("False", "True"))
    assert off.keys() == on.keys()
    for k in off:
        torch.testing.assert_close(on[k], off[k], atol=1e-6, rtol=1e-5)


def test_baselines_need_a_previous_adapter(tiny_model_dir, tmp_path):
    with pytest.raises(SersError, match="previous stage"):
        run_stage(tiny_model_dir, tmp_path / "x", rows_of("sa", 4), prev_adapter=None, lam=0.0,
                    lambda_min=0.0, only_above_min=False, baseline={"kind": "l2", "lambda": 1.0}, **FAST)


# ---- replay-kmeans: SSR's KMeansSel over real rows, with the pseudo rows' selection code ----

def test_kmeans_selection_picks_the_representatives_of_real_rows():
    """Three clusters of five rows, each symmetric around one of its rows (so that row is its centroid)."""
    centres = np.eye(3)
    offsets = [np.zeros(3)] + [s * 0.1 * np.eye(3)[a] for a in (0, 1) for s in (1, -1)]
    emb = np.concatenate([[c + o for o in offsets] for c in centres]).astype(np.float32)
    order = [1, 3, 0, 2, 4, 6, 5, 7, 8, 9, 11, 12, 13, 14, 10]  # the centres (rows 0, 5, 10) land on 2, 6, 14
    emb = emb[order]
    chosen, summary = select_by_kmeans(emb, n_clusters=3, memory=3, seed=7)
    assert sorted(chosen) == [2, 6, 14] and summary["cluster_sizes"] == [5, 5, 5]
    assert select_by_kmeans(emb, 3, 3, 7)[0] == chosen  # deterministic given the seed
    six, _ = select_by_kmeans(emb, 3, 6, 7)
    assert len(six) == 6 and {i // 5 for i in six} == {0, 1, 2} and all(sum(i // 5 == c for i in six) == 2 for c in range(3))


def test_every_baseline_method_has_a_regulariser():
    """`sers.methods` (torch-free: the Snakefile imports it) and `sers.regularisers.BASELINES` name the
    same baselines, so a new method is one class plus one entry in each table."""
    from sers.methods import BASELINE_METHODS
    from sers.regularisers import BASELINES, baseline_from_config

    assert set(BASELINES) == set(BASELINE_METHODS)
    reg = baseline_from_config({"kind": "ewc", "lambda": 2.0, "fisher": "f.safetensors", "fisher_rows": 200})
    assert reg.config == {"lambda": 2.0, "fisher": "f.safetensors"}  # fisher_rows is the `fisher` rule's
    with pytest.raises(SersError, match="not one of"):
        baseline_from_config({"kind": "si", "lambda": 1.0})
