"""One LoRA training stage (METHOD.md §4) on the tiny random LLaMA."""
from __future__ import annotations

import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sers import forward, training  # noqa: E402
from sers.errors import SersError  # noqa: E402
from sers.models import LoraShape, load_trainable  # noqa: E402
from sers.regularisers import MicroBatch, WassersteinPenalty, lora_l2_penalty, lora_parameters  # noqa: E402
from sers.training import TrainRow, target_cross_entropy  # noqa: E402

from _tiny import FAST_TRAINING, randomise_lora, run_stage, sample_rows, tiny_model_dir  # noqa: E402,F401

FAST = FAST_TRAINING
LOSS_KEYS = {"step", "epoch", "loss", "ce", "penalty", "lambda_eff", "replay_fraction", "baseline_term", "lr",
             "grad_norm"}
GRAD_KEYS = {"grad_norm_regulariser", "grad_norm_task"}  # steps where a parameter-only regulariser acts


def rows_of(task: str, n: int, is_replay: bool) -> list[TrainRow]:
    return [TrainRow(r.full_prompt, r.output, is_replay) for r in sample_rows(task)[:n]]


@pytest.fixture(scope="module")
def mixed_rows() -> list[TrainRow]:
    return rows_of("sa", 8, False) + rows_of("qa", 8, True)


def read_log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]


def stage(model_dir, out, rows, **over):
    return run_stage(model_dir, out, rows, **{"lambda_min": 0.15, **over})


def fresh_lora(model_dir, r=4, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    from sers.models import load_model

    torch.manual_seed(0)
    return get_peft_model(load_model(str(model_dir), device="cpu"),
                          LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=16, lora_dropout=dropout,
                                     target_modules=["q_proj", "v_proj"]))


# ---- the penalty ---------------------------------------------------------------------------------

def penalised(ce: float, penalty: float, lam: float, replay_fraction: float, **kw) -> float:
    """ce + the penalty's weight · penalty: one micro-batch that is the whole step."""
    return ce + WassersteinPenalty(lam, **kw).weight(replay_fraction) * penalty


def test_penalty_weight_hand_numbers():
    # ce=2, penalty=0.5, λ=0.4, r_b=0.25 → 2 + 0.4·0.75·0.5 = 2.15
    assert penalised(2.0, 0.5, 0.4, 0.25) == pytest.approx(2.15)
    assert penalised(2.0, 0.5, 0.4, 1.0) == pytest.approx(2.0)     # an all-replay batch: no penalty
    assert penalised(2.0, 0.5, 0.4, 0.0) == pytest.approx(2.2)     # an all-new batch: full penalty
    assert penalised(2.0, 0.5, 0.4, 0.25, scale=0.1) == pytest.approx(2.015)


def test_penalty_only_above_min():
    # released behaviour: λ ≤ λmin → no penalty at all
    assert penalised(2.0, 0.5, 0.15, 0.25, only_above_min=True, lambda_min=0.15) == 2.0
    assert penalised(2.0, 0.5, 0.10, 0.25, only_above_min=True, lambda_min=0.15) == 2.0
    assert penalised(2.0, 0.5, 0.4, 0.25, only_above_min=True, lambda_min=0.15) == pytest.approx(2.15)
    # default: λ = λmin still penalises: 2 + 0.15·0.75·0.5 = 2.05625
    assert penalised(2.0, 0.5, 0.15, 0.25, lambda_min=0.15) == pytest.approx(2.05625)
    with pytest.raises(SersError, match="anchor"):
        WassersteinPenalty(0.4, anchor="origin")


def test_penalty_term_of_a_micro_batch(tiny_model_dir):
    """The term a micro-batch adds: weight · row share · ½ Σ mean(p²); its log values; none where it does
    not apply (λ ≤ λmin under only_above_min), while the penalty is still logged."""
    model = fresh_lora(tiny_model_dir)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.fill_(0.5)  # ½ Σ mean(p²) = ½ · 8 · 0.25 = 1.0
    reg = WassersteinPenalty(0.4)
    reg.setup(lora_parameters(model), None)
    term, log = reg.term(model, MicroBatch(row_share=0.5, token_share=0.6, replay_fraction=0.25))
    assert float(term.detach()) == pytest.approx(0.4 * 0.75 * 0.5 * 1.0)
    assert log == {"penalty": pytest.approx(0.5), "lambda_eff": pytest.approx(0.5 * 0.4 * 0.75)}
    assert float(reg.step_term({"lambda_eff": 0.3})) == pytest.approx(0.3)
    off = WassersteinPenalty(0.1, lambda_min=0.15, only_above_min=True)
    off.setup(lora_parameters(model), None)
    term, log = off.term(model, MicroBatch(row_share=1.0, token_share=1.0, replay_fraction=0.0))
    assert term is None and log == {"penalty": pytest.approx(1.0), "lambda_eff": 0.0}


def test_lora_l2_penalty_hand_numbers(tiny_model_dir):
    model = fresh_lora(tiny_model_dir)
    mats = lora_parameters(model)
    # 2 layers × (q_proj, v_proj) × (lora_A, lora_B) = 8 matrices
    assert len(mats) == 8 and all(("lora_A" in n) or ("lora_B" in n) for n, _ in mats)
    with torch.no_grad():
        for _, p in mats:
            p.fill_(0.5)  # mean(p²) = 0.25 for every matrix
    pen = lora_l2_penalty(model)
    assert float(pen.detach()) == pytest.approx(0.5 * 8 * 0.25)  # = 1.0
    pen.backward()
    # d/dp ½·mean(p²) = p / numel
    _, p = mats[0]
    torch.testing.assert_close(p.grad, p.detach() / p.numel())


def test_penalty_variants_hand_numbers(tiny_model_dir):
    model = fresh_lora(tiny_model_dir)
    mats = lora_parameters(model)
    with torch.no_grad():
        for _, p in mats:
            p.fill_(0.5)
    anchor = {n: torch.full_like(p, 0.25) for n, p in mats}
    numel = sum(p.numel() for _, p in mats)
    # sum toward 0: ½ Σ 0.25 over every element; anchored and summed: ½ Σ (0.5 − 0.25)² = ½ Σ 0.0625
    assert float(lora_l2_penalty(model, reduction="sum")) == pytest.approx(0.5 * numel * 0.25, rel=1e-6)
    pen = lora_l2_penalty(model, anchor, "sum")
    assert float(pen) == pytest.approx(0.5 * numel * 0.0625, rel=1e-6)
    pen.backward()
    _, p = mats[0]
    torch.testing.assert_close(p.grad, torch.full_like(p, 0.25))  # d/dp ½(p − p*)² = p − p*
    assert float(lora_l2_penalty(model, {n: q.detach() for n, q in mats}, "mean")) == 0.0
    with pytest.raises(SersError, match="reduction"):
        lora_l2_penalty(model, reduction="max")


def test_anchored_penalty_starts_at_zero_from_the_previous_adapter(tiny_model_dir, mixed_rows, tmp_path):
    first = tmp_path / "stage1"
    stage(tiny_model_dir, first, mixed_rows[:8], lr=1e-2)
    stage(tiny_model_dir, tmp_path / "a", mixed_rows[8:], prev_adapter=str(first), lam=0.3,
          penalty_anchor="previous", penalty_reduction="sum", penalty_scale=0.5)
    stage(tiny_model_dir, tmp_path / "z", mixed_rows[8:], prev_adapter=str(first), lam=0.3,
          penalty_reduction="sum", penalty_scale=0.5)
    anchored, toward_zero = read_log(tmp_path / "a"), read_log(tmp_path / "z")
    assert anchored[0]["penalty"] == 0.0 and toward_zero[0]["penalty"] > 0  # θ = θt−1 before the first step
    cfg = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert cfg["penalty"] == {"anchor": "previous", "reduction": "sum", "scale": 0.5}


# ---- the loss over packed batches -----------------------------------------------------------------

def test_shared_prefix_gives_same_loss_and_gradients(tiny_model_dir):
    from sers.forward import pack
    from sers.models import load_tokenizer
    from sers.prompts import encode_example

    tok = load_tokenizer(str(tiny_model_dir))
    model = randomise_lora(fresh_lora(tiny_model_dir), std=0.1)  # lora_B ≠ 0, so lora_A gets gradient too
    model.train()
    examples = [encode_example(tok, r.full_prompt, r.output, "plain", 96, 16) for r in sample_rows("sa")[:4]]
    examples[1] = (examples[1][0], examples[1][1][:1] + examples[0][1])  # unequal target lengths
    seqs = [p + t for p, t in examples]
    assert pack(seqs, tok.pad_token_id, True, keep_last=3).prefix_len > 10  # a real shared prefix

    def loss_and_grads(shared):
        model.zero_grad(set_to_none=True)
        ce, n = target_cross_entropy(model, examples, tok.pad_token_id, shared)
        ce.backward()
        return float(ce.detach()), n, {k: p.grad.clone() for k, p in lora_parameters(model)}

    ce_s, n_s, g_s = loss_and_grads(True)
    ce_u, n_u, g_u = loss_and_grads(False)
    assert n_s == n_u == sum(len(t) for _, t in examples)
    assert ce_s == pytest.approx(ce_u, abs=1e-5)
    for k in g_u:
        assert g_s[k].abs().sum() > 0, k  # every LoRA matrix, the prefix's included, gets gradient
        torch.testing.assert_close(g_s[k], g_u[k], atol=1e-5, rtol=1e-4)

    # and both equal the per-row reference: Σ over rows of token CE on the target / number of target tokens
    with torch.no_grad():
        total = 0.0
        for p, t in examples:
            logits = model(input_ids=torch.tensor([p + t])).logits[0]
            total += float(torch.nn.functional.cross_entropy(logits[len(p) - 1:-1], torch.tensor(t),
                                                             reduction="sum"))
    assert ce_u == pytest.approx(total / n_u, abs=1e-5)


def test_epoch_batches_group_rows_of_one_instruction():
    prompts = [[1, 2, 3, k] for k in range(6)] + [[9, 9, 9, k] for k in range(6)]
    gen = torch.Generator().manual_seed(0)
    batches = training.epoch_batches(prompts, 3, gen)
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert all(len({prompts[i][0] for i in b}) == 1 for b in batches)  # task-pure batches
    assert batches == training.epoch_batches(prompts, 3, torch.Generator().manual_seed(0))  # deterministic
    plain = training.epoch_batches(prompts, 3, torch.Generator().manual_seed(0), group=False)
    assert sorted(i for b in plain for i in b) == list(range(12))


# ---- whole stages ----------------------------------------------------------------------------------

def test_stage_outputs_and_adapter_loads(tiny_model_dir, mixed_rows, tmp_path):
    from peft import PeftModel

    from sers.models import load_model

    out = tmp_path / "stage1"
    summary = stage(tiny_model_dir, out, mixed_rows, lam=0.3)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "loss.jsonl", "train_config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["stage1"]  # no temporary leftovers
    assert summary["steps"] == 4 and summary["rows"] == 16 and summary["replay_rows"] == 8
    assert summary["tokens_per_s"] > 0 and summary["wall_s"] > 0 and math.isfinite(summary["final_loss"])
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["lam"] == 0.3 and cfg["n_rows"] == 16 and cfg["n_replay_rows"] == 8 and cfg["n_new_rows"] == 8
    assert cfg["target_modules"] == ["q_proj", "v_proj"] and cfg["lora_r"] == 4 and cfg["seed"] == 0
    # one forward per task instruction in each of the 4 micro-batches of sa and qa rows: shared, or plain
    # where an instruction has one row in a micro-batch
    assert set(cfg["forward_layouts"]) <= {"plain", "two_pass", "packed"}
    assert 4 <= sum(cfg["forward_layouts"].values()) <= 8
    log = read_log(out)
    assert len(log) == 4 and all(set(rec) == LOSS_KEYS | (GRAD_KEYS if rec["lambda_eff"] > 0 else set()) for rec in log)
    for rec in log:  # the penalty's pull on θ: λ_eff·p/numel per matrix, small next to the task's gradient
        if rec["lambda_eff"] > 0:
            assert 0 < rec["grad_norm_regulariser"] < rec["grad_norm_task"]
    assert [rec["step"] for rec in log] == [1, 2, 3, 4] and log[-1]["epoch"] == 1.0
    for rec in log:  # is_replay comes from the rows; λ·(1 − r_b) is the coefficient applied
        assert rec["lambda_eff"] == pytest.approx(0.3 * (1 - rec["replay_fraction"]))
        assert rec["loss"] == pytest.approx(rec["ce"] + rec["lambda_eff"] * rec["penalty"], rel=1e-5)
    assert sum(rec["replay_fraction"] for rec in log) == pytest.approx(2.0)  # 8 of 16 rows, batches of 4
    model = PeftModel.from_pretrained(load_model(str(tiny_model_dir), device="cpu"), str(out))
    assert any(float(p.abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)  # trained


def test_regulariser_gradient_norms_split_the_gradient():
    a = torch.tensor([1.0, -2.0, 2.0], requires_grad=True)
    x = torch.tensor([3.0, 0.0, 4.0])
    lam = 0.6
    reg = lam * 0.5 * a.pow(2).mean()
    ((a * x).sum() + reg).backward()
    before = a.grad.clone()
    reg_norm, task_norm = training.regulariser_gradient_norms([a], lam * 0.5 * a.pow(2).mean())
    assert reg_norm == pytest.approx(lam * 3.0 / 3)  # ‖λ·a/numel‖ = 0.6·‖a‖/3, ‖a‖ = 3
    assert task_norm == pytest.approx(5.0)           # ‖x‖
    assert torch.equal(a.grad, before)               # reads the gradients, changes nothing


def test_only_above_min_switches_penalty_off(tiny_model_dir, mixed_rows, tmp_path):
    stage(tiny_model_dir, tmp_path / "a", mixed_rows[:8], lam=0.15, lambda_min=0.15, only_above_min=True)
    log = read_log(tmp_path / "a")
    assert all(rec["lambda_eff"] == 0.0 and rec["loss"] == rec["ce"] for rec in log)
    assert json.loads((tmp_path / "a" / "train_config.json").read_text())["penalty_applies"] is False


def test_loss_decreases(tiny_model_dir, tmp_path):
    rows = rows_of("sa", 8, False)
    stage(tiny_model_dir, tmp_path / "s", rows, epochs=5, lr=3e-2, batch_size=4)
    log = read_log(tmp_path / "s")
    assert len(log) == 10 and log[-1]["epoch"] == 5.0
    first, last = sum(r["ce"] for r in log[:2]) / 2, sum(r["ce"] for r in log[-2:]) / 2
    assert last < first - 0.5, (first, last)


def test_fractional_epochs_and_grad_accum(tiny_model_dir, mixed_rows, tmp_path):
    s = stage(tiny_model_dir, tmp_path / "f", mixed_rows, epochs=1.5, batch_size=4, grad_accum=4)
    assert s["micro_batches"] == 6 and s["steps"] == 2  # ceil(1.5·4) micro-batches, 4 + 2 per step
    log = read_log(tmp_path / "f")
    assert [r["epoch"] for r in log] == [1.0, 1.5]


def test_stage_continues_previous_adapter(tiny_model_dir, mixed_rows, tmp_path):
    from safetensors.torch import load_file

    first = tmp_path / "stage1"
    stage(tiny_model_dir, first, mixed_rows[:8], lr=1e-2)
    saved = load_file(str(first / "adapter_model.safetensors"))
    assert any(float(t.abs().sum()) > 0 for k, t in saved.items() if "lora_B" in k)

    # at load the adapter's weights are the saved ones (not a fresh init)
    model = load_trainable(str(tiny_model_dir), str(first), LoraShape(4, 16, 0.0), seed=1, device="cpu").model
    loaded = {n: p for n, p in lora_parameters(model)}
    assert len(loaded) == len(saved) and all(p.requires_grad for p in loaded.values())
    for key, tensor in saved.items():
        match = [p for n, p in loaded.items() if n.replace(".default", "").endswith(key.split("base_model.")[-1])]
        assert len(match) == 1, key
        torch.testing.assert_close(match[0].detach(), tensor, atol=0, rtol=0)

    # lr = 0: the next stage writes the very same adapter back; lr > 0: it keeps training it
    stage(tiny_model_dir, tmp_path / "same", mixed_rows[8:], prev_adapter=str(first), lr=0.0)
    again = load_file(str(tmp_path / "same" / "adapter_model.safetensors"))
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)
    stage(tiny_model_dir, tmp_path / "stage2", mixed_rows[8:], prev_adapter=str(first), lam=0.3)
    moved = load_file(str(tmp_path / "stage2" / "adapter_model.safetensors"))
    assert not all(torch.equal(moved[k], saved[k]) for k in saved)
    cfg = json.loads((tmp_path / "stage2" / "train_config.json").read_text())
    assert cfg["prev_adapter"] == str(first)

    with pytest.raises(SersError, match="one adapter is carried"):
        stage(tiny_model_dir, tmp_path / "bad", mixed_rows[:4], prev_adapter=str(first), lora_r=8)


def test_nan_loss_stops_the_stage(tiny_model_dir, mixed_rows, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    calls = {"n": 0}
    real = training.target_cross_entropy

    def poisoned(*args, **kwargs):  # the third micro-batch's forward (optimiser step 3) goes NaN
        calls["n"] += 1
        ce, *rest = real(*args, **kwargs)
        return (ce * (float("nan") if calls["n"] == 3 else 1.0), *rest)

    monkeypatch.setattr(training, "target_cross_entropy", poisoned)
    with pytest.raises(SersError, match=r"step 3/4"):
        stage(tiny_model_dir, out, mixed_rows, lam=0.3, group_batches=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing a later run would trust


def test_huge_lr_diverges_into_sers_error(tiny_model_dir, mixed_rows, tmp_path):
    with pytest.raises(SersError, match=r"step \d+"):
        stage(tiny_model_dir, tmp_path / "x", mixed_rows, lr=1e30, max_grad_norm=None, epochs=2)
    assert not (tmp_path / "x").exists()


def test_stage_is_deterministic(tiny_model_dir, mixed_rows, tmp_path):
    from safetensors.torch import load_file

    stage(tiny_model_dir, tmp_path / "a", mixed_rows[:8], lam=0.3, lora_dropout=0.1)
    stage(tiny_model_dir, tmp_path / "b", mixed_rows[:8], lam=0.3, lora_dropout=0.1)
    assert read_log(tmp_path / "a") == read_log(tmp_path / "b")
    a, b = (load_file(str(tmp_path / x / "adapter_model.safetensors")) for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refuses_empty_rows(tiny_model_dir, tmp_path):
    with pytest.raises(SersError):
        stage(tiny_model_dir, tmp_path / "e", [])


def test_mixed_task_batch_grouped_by_instruction_gives_same_loss_and_gradients(tiny_model_dir):
    """A batch mixing tasks runs one forward per instruction (prefix shared within each) at equal maths."""
    from sers.models import load_tokenizer
    from sers.prompts import encode_example

    tok = load_tokenizer(str(tiny_model_dir))
    model = randomise_lora(fresh_lora(tiny_model_dir), std=0.1)
    model.train()
    rows = sample_rows("sa")[:3] + sample_rows("trans")[:3]
    rows = [rows[i] for i in (0, 3, 1, 4, 2, 5)]  # interleaved tasks, as a shuffled batch would be
    examples = [encode_example(tok, r.full_prompt, r.output, "plain", 96, 16) for r in rows]
    groups = [r.instruction for r in rows]

    def loss_and_grads(g):
        model.zero_grad(set_to_none=True)
        ce, n = target_cross_entropy(model, examples, tok.pad_token_id, True, g)
        ce.backward()
        return float(ce.detach()), n, {k: p.grad.clone() for k, p in lora_parameters(model)}

    ce_g, n_g, g_g = loss_and_grads(groups)
    ce_m, n_m, g_m = loss_and_grads(None)
    assert n_g == n_m and ce_g == pytest.approx(ce_m, abs=1e-5)
    for k in g_m:
        torch.testing.assert_close(g_g[k], g_m[k], atol=1e-5, rtol=1e-4)


# ---- activation checkpointing (training.gradient_checkpointing) -----------------------------------

@pytest.mark.parametrize("layout", ["plain", "two_pass", "packed"])
def test_gradient_checkpointing_gives_same_loss_and_gradients(tiny_model_dir, layout):
    """Checkpointed layers recompute their forward in the backward pass, at equal loss and gradients,
    in every layout: the two-pass one reads the prefix cache inside checkpointed layers, the packed one
    recomputes each pack under its block mask."""
    from sers.forward import LayerCost, packs
    from sers.models import load_tokenizer
    from sers.prompts import encode_example

    tok = load_tokenizer(str(tiny_model_dir))
    examples = [encode_example(tok, r.full_prompt, r.output, "plain", 96, 16) for r in sample_rows("sa")[:4]]
    examples[1] = (examples[1][0], examples[1][1][:1] + examples[0][1])  # unequal target lengths

    def loss_and_grads(checkpointing):
        model = randomise_lora(fresh_lora(tiny_model_dir, dropout=0.1), std=0.1)  # dropout: the recompute's RNG
        if checkpointing:
            training.enable_gradient_checkpointing(model)
        model.train()
        calls = []
        attn = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn"))
        attn.register_forward_hook(lambda *_: calls.append(1))
        torch.manual_seed(3)
        ce, n = target_cross_entropy(model, examples, tok.pad_token_id, layout != "plain", layout=layout)
        ce.backward()
        return float(ce.detach()), n, {k: p.grad.clone() for k, p in lora_parameters(model)}, len(calls), model

    ce_0, n_0, g_0, calls_0, model = loss_and_grads(False)
    ce_1, n_1, g_1, calls_1, _ = loss_and_grads(True)
    p, _ = forward.batch_layout(model, examples, True)
    n_packs = len(packs(p, [len(a) + len(b) - p for a, b in examples], LayerCost.of(model)))
    # the first layer's attention: one call per forward, and once more per checkpointed forward (the
    # recompute); the two-pass layout's prefix pass is not checkpointed
    forwards, recomputed = {"plain": (1, 1), "two_pass": (2, 1), "packed": (n_packs, n_packs)}[layout]
    assert calls_0 == forwards and calls_1 == forwards + recomputed
    assert n_0 == n_1 and ce_1 == pytest.approx(ce_0, abs=1e-6)
    for k in g_0:
        assert g_1[k].abs().sum() > 0, k
        torch.testing.assert_close(g_1[k], g_0[k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_stage_with_gradient_checkpointing_trains_the_same_adapter(tiny_model_dir, mixed_rows, tmp_path, shared):
    from safetensors.torch import load_file

    for name, on in (("off", False), ("on", True)):
        stage(tiny_model_dir, tmp_path / name, mixed_rows[:8], lam=0.3, lora_dropout=0.1, shared_prefix=shared,
              gradient_checkpointing=on)
    assert json.loads((tmp_path / "on/train_config.json").read_text())["gradient_checkpointing"] is True
    off, on = read_log(tmp_path / "off"), read_log(tmp_path / "on")
    assert len(off) == len(on) == 2
    for a, b in zip(off, on):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    a, b = (load_file(str(tmp_path / x / "adapter_model.safetensors")) for x in ("off", "on"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5)


def test_checkpointed_shared_prefix_refuses_a_transformers_that_drops_the_cache(tiny_model_dir, monkeypatch):
    """Where checkpointed layers cannot keep a cache, the two-pass suffix would silently lose the prefix:
    refuse."""
    from sers.models import load_tokenizer
    from sers.prompts import encode_example

    tok = load_tokenizer(str(tiny_model_dir))
    examples = [encode_example(tok, r.full_prompt, r.output, "plain", 96, 16) for r in sample_rows("sa")[:2]]
    model = fresh_lora(tiny_model_dir)
    training.enable_gradient_checkpointing(model)
    model.train()
    monkeypatch.setattr(forward, "GradientCheckpointingLayer", None)
    with pytest.raises(SersError, match="training.gradient_checkpointing with training.shared_prefix"):
        target_cross_entropy(model, examples, tok.pad_token_id, True, layout="two_pass")
    target_cross_entropy(model, examples, tok.pad_token_id, False)[0].backward()  # unshared: no cache to keep
    target_cross_entropy(model, examples, tok.pad_token_id, True, layout="packed")[0].backward()  # one pass, no cache


@pytest.mark.parametrize("kind", [None, "lwf"])
def test_grad_accum_gives_the_loss_and_gradients_of_one_batch(tiny_model_dir, tmp_path, kind):
    # micro-batches of 4 and 2 rows, targets of very different lengths, replay and new rows: a mean of
    # micro-batch means would differ from the one batch's token mean and λ·(1 − r_b)
    rows = rows_of("sa", 4, False) + [TrainRow(r.full_prompt, r.output * 4, True) for r in sample_rows("qa")[:2]]
    prev = None
    extra = {}
    if kind == "lwf":
        stage(tiny_model_dir, tmp_path / "prev", rows, epochs=1, lr=1e-2, batch_size=6)
        prev = str(tmp_path / "prev")
        extra = {"baseline": {"kind": "lwf", "lambda": 1.0, "temperature": 2.0}}
    common = {**extra, "prev_adapter": prev, "lam": 0.5, "epochs": 1, "lora_dropout": 0.0, "max_grad_norm": 0.0,
              "group_batches": False}
    stage(tiny_model_dir, tmp_path / "one", rows, batch_size=6, grad_accum=1, **common)
    stage(tiny_model_dir, tmp_path / "acc", rows, batch_size=4, grad_accum=2, **common)
    one, acc = read_log(tmp_path / "one"), read_log(tmp_path / "acc")
    assert len(one) == len(acc) == 1
    for key in ("loss", "ce", "penalty", "lambda_eff", "replay_fraction", "baseline_term", "grad_norm"):
        assert acc[0][key] == pytest.approx(one[0][key], rel=1e-5, abs=1e-7), key
