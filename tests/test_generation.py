"""The batched generation path (sers.generation) against HF generate and uncached references."""
from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

from sers.forward import pack  # noqa: E402
from sers.generation import Blend, Sampling, continuation_logprobs, generate  # noqa: E402

from _tiny import lively_lora_model, lively_model, task_prompts, tiny_model_dir, tiny_tokenizer  # noqa: E402,F401

GREEDY = Sampling(max_new_tokens=12)
LENGTHS = [40, 49, 58, 67]  # unequal prompt lengths, one task: they share the instruction


@pytest.fixture(scope="module")
def prompts(tok):
    ps = task_prompts(tok, "sa", 4, lengths=LENGTHS)
    assert pack(ps, tok.pad_token_id, share_prefix=True).prefix_len >= 20  # the shared path is exercised
    return ps


@pytest.fixture(scope="module")
def mixed_prompts(tok):
    """Two tasks in one batch: no common prefix, unequal lengths."""
    return task_prompts(tok, "sa", 2, lengths=[30, 52]) + task_prompts(tok, "qa", 2, lengths=[41, 36])


def ids(gens):
    return [g.token_ids for g in gens]


def hf_greedy(model, tok, prompt, max_new_tokens):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    toks = out[0, len(prompt):].tolist()
    return toks[:toks.index(tok.eos_token_id)] if tok.eos_token_id in toks else toks


# ---- greedy ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["one_task", "two_tasks"])
def test_batched_greedy_equals_batch1_and_hf(model, tok, prompts, mixed_prompts, which):
    ps = prompts if which == "one_task" else mixed_prompts
    shared = ids(generate(model, tok, ps, GREEDY, batch_size=4, share_prefix=True))
    unshared = ids(generate(model, tok, ps, GREEDY, batch_size=4, share_prefix=False))
    single = ids(generate(model, tok, ps, GREEDY, batch_size=1))
    hf = [hf_greedy(model, tok, p, GREEDY.max_new_tokens) for p in ps]
    assert shared == unshared == single == hf
    assert len({tuple(t) for t in hf}) == len(ps) and all(len(set(t)) > 3 for t in hf)  # varied outputs


def test_greedy_logprob_sum_is_the_chosen_tokens_logprob(model, tok, prompts):
    gens = generate(model, tok, prompts, Sampling(max_new_tokens=6, stop_at_eos=False), batch_size=4)
    for p, g in zip(prompts, gens):
        assert len(g.token_ids) == 6
        direct = continuation_logprobs(model, tok.pad_token_id, [p], [g.token_ids])[0]
        assert g.logprob_sum == pytest.approx(sum(direct), abs=1e-4)
        assert g.mean_logprob == pytest.approx(g.logprob_sum / 6)


class HostReads(TorchFunctionMode):
    """Counts the calls that read a tensor's values on the host (`bool(t)`, `t.item()`, `t.tolist()`, …):
    each is a host sync on a GPU, so a CPU run can count what a GPU run would wait for."""

    READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("blend", [None, Blend(alpha=0.5)], ids=["greedy", "blend"])
def test_decoding_reads_the_device_once_per_step(lora_model, tok, prompts, mixed_prompts, blend):
    """One host sync per decoding step (the all-done check), padded batch or not: transformers would add
    one per step to check a 2D padding mask, so the steps get a ready 4D mask or none."""
    def reads(ps, steps):
        with HostReads() as counter:
            generate(lora_model, tok, ps, Sampling(max_new_tokens=steps, stop_at_eos=False), batch_size=len(ps),
                     blend=blend)
        return counter.count

    same_length = task_prompts(tok, "sa", 3, lengths=[45, 45, 45])
    for ps in (prompts, mixed_prompts, same_length):  # shared prefix + padding, padding alone, neither
        assert reads(ps, 9) - reads(ps, 5) == 4, len(ps)


def test_seeded_sampling_is_reproducible(model, tok, prompts):
    s = Sampling(do_sample=True, temperature=1.3, top_p=0.9, max_new_tokens=10)
    a = ids(generate(model, tok, prompts, s, batch_size=2, seed=7))
    b = ids(generate(model, tok, prompts, s, batch_size=2, seed=7))
    c = ids(generate(model, tok, prompts, s, batch_size=2, seed=8))
    assert a == b
    assert a != c  # the seed matters
    assert a != ids(generate(model, tok, prompts, Sampling(max_new_tokens=10), batch_size=2))  # it sampled


# ---- blend decoding --------------------------------------------------------------------------------

@pytest.mark.parametrize("gate_rows", [True, False], ids=["row-gate", "peft-mixed-batch"])
def test_blend_alpha_extremes_reproduce_theta0_and_thetat(lora_model, tok, prompts, mixed_prompts, gate_rows):
    for ps in (prompts, mixed_prompts):
        with lora_model.disable_adapter():
            theta0 = generate(lora_model, tok, ps, GREEDY, batch_size=4)
        theta_t = generate(lora_model, tok, ps, GREEDY, batch_size=4)
        assert ids(theta0) != ids(theta_t)  # the adapter matters, so the test means something
        assert sum(a != b for a, b in zip(ids(theta0), ids(theta_t))) >= 3
        for share in (True, False):
            base = generate(lora_model, tok, ps, GREEDY, batch_size=4, blend=Blend(alpha=1.0), share_prefix=share,
                            gate_rows=gate_rows)
            tuned = generate(lora_model, tok, ps, GREEDY, batch_size=4, blend=Blend(alpha=0.0), share_prefix=share,
                             gate_rows=gate_rows)
            assert ids(base) == ids(theta0)
            assert ids(tuned) == ids(theta_t)
            for g, ref in zip(base, theta0):
                assert g.logprob_sum == pytest.approx(ref.logprob_sum, abs=1e-4)


def reference_blend(model, prompt, alpha, mode, max_new_tokens, eos_id):
    """Uncached, batch 1: two full passes per token (adapter off = θ0, on = θt), mixed in log space."""
    seq = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            x = torch.tensor([seq])
            with model.disable_adapter():
                base = model(input_ids=x).logits[0, -1].float()
            tuned = model(input_ids=x).logits[0, -1].float()
            if mode == "probability":
                base, tuned = base.log_softmax(-1), tuned.log_softmax(-1)
            mixed = torch.logaddexp(base + math.log(alpha), tuned + math.log(1 - alpha))
            token = int(mixed.argmax())
            if token == eos_id:
                break
            out.append(token)
            seq.append(token)
    return out


@pytest.mark.parametrize("mode", ["probability", "logit"])
def test_cached_blend_equals_uncached_reference(lora_model, tok, prompts, mixed_prompts, mode):
    n = 10
    ps = prompts[:3] + mixed_prompts[2:]
    ref = [reference_blend(lora_model, p, 0.5, mode, n, tok.eos_token_id) for p in ps]
    for share in (True, False):
        for gate_rows in (True, False):
            got = generate(lora_model, tok, ps, Sampling(max_new_tokens=n), batch_size=5,
                           blend=Blend(alpha=0.5, mode=mode), share_prefix=share, gate_rows=gate_rows)
            assert ids(got) == ref, (mode, share, gate_rows)


def test_row_gate_routes_like_peft_mixed_batches(lora_model, tok, prompts, mixed_prompts):
    """The gate is what a blend uses on a plain LoRA model, and it is θ0 / θt row for row: the same tokens
    and log-probabilities as peft's mixed-adapter batches, sampling included."""
    from sers.generation import LoraRowGate

    assert LoraRowGate.for_model(lora_model, "default") is not None
    assert LoraRowGate.for_model(lora_model, "other") is None  # not the active adapter: peft routes
    s = Sampling(do_sample=True, temperature=0.9, top_p=0.8, repetition_penalty=1.2, max_new_tokens=10)
    ps = prompts + mixed_prompts
    gated = generate(lora_model, tok, ps, s, batch_size=3, seed=4, blend=Blend(alpha=0.3))
    mixed = generate(lora_model, tok, ps, s, batch_size=3, seed=4, blend=Blend(alpha=0.3), gate_rows=False)
    assert ids(gated) == ids(mixed)
    for g, m in zip(gated, mixed):
        assert g.logprob_sum == pytest.approx(m.logprob_sum, abs=1e-5)


def test_row_gate_refuses_a_forward_it_was_not_told_about(lora_model):
    from sers.generation import LoraRowGate

    gate = LoraRowGate.for_model(lora_model, "default")
    x = torch.tensor([[5, 6, 7], [5, 6, 8]])
    with gate, torch.no_grad():
        gate.route(["__base__", "default"])
        lora_model(input_ids=x)
        with pytest.raises(RuntimeError, match="without a gate for its rows"):
            lora_model(input_ids=x[:1])
        with pytest.raises(ValueError, match="not \\['teacher'\\]"):
            gate.route(["__base__", "teacher"])
    assert not any(layer.lora_A["default"]._forward_pre_hooks for layer in gate.layers)  # hooks removed


def test_row_gate_leaves_lora_variants_to_peft(tiny_model_dir):
    """DoRA rescales the base weights too: gating the LoRA input would not give θ0, so peft routes."""
    from peft import LoraConfig, get_peft_model

    from sers.generation import LoraRowGate
    from sers.models import load_model

    dora = get_peft_model(load_model(str(tiny_model_dir), device="cpu"),
                          LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"], use_dora=True))
    assert LoraRowGate.for_model(dora, "default") is None


def test_blend_logprobs_modes():
    # exp(raw logits) and probabilities are different mixtures: make sure "logit" is not silently "probability"
    from sers.generation import blend_logprobs

    a, b = torch.randn(2, 50) * 3, torch.randn(2, 50)
    p = blend_logprobs(a, b, 0.5, "probability")
    lg = blend_logprobs(a, b, 0.5, "logit")
    torch.testing.assert_close(p.exp().sum(-1), torch.ones(2))
    torch.testing.assert_close(lg.exp().sum(-1), torch.ones(2))
    torch.testing.assert_close(p, (0.5 * a.softmax(-1) + 0.5 * b.softmax(-1)).log())
    assert not torch.allclose(p, lg)
    with pytest.raises(ValueError):
        blend_logprobs(a, b, 0.5, "nonsense")


# ---- continuation scoring --------------------------------------------------------------------------

def direct_logprobs(model, prompt, cont):
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([list(prompt) + list(cont)])).logits[0].float().log_softmax(-1)
    return [float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont)]


@pytest.mark.parametrize("share", [True, False])
def test_continuation_logprobs_equal_direct(model, tok, prompts, mixed_prompts, share):
    ps = prompts + mixed_prompts
    conts = [[11, 12, 13], [14], [], [15, 16, 17, 18, 19], [20, 21], [22], [23, 24, 25, 26], [27, 28]]
    got = continuation_logprobs(model, tok.pad_token_id, ps, conts, batch_size=4, share_prefix=share)
    for p, c, g in zip(ps, conts, got):
        assert len(g) == len(c)
        assert g == pytest.approx(direct_logprobs(model, p, c), abs=1e-5)


def test_continuation_logprobs_when_a_row_runs_into_another_rows_prompt(model, tok):
    """Regression: one row's prompt+continuation is a prefix of another row's prompt; the shared
    prefix must still end before every row's last prompt token (it used to cut into the short-prompt
    row's continuation: a crash, or silently wrong numbers)."""
    ps = [list(range(5, 15)), [5, 6, 7], list(range(5, 13))]
    conts = [[15], list(range(8, 17)), [13, 14]]
    for share in (True, False):
        got = continuation_logprobs(model, tok.pad_token_id, ps, conts, share_prefix=share)
        for p, c, g in zip(ps, conts, got):
            assert g == pytest.approx(direct_logprobs(model, p, c), abs=1e-5)


def test_shared_prefix_auto_is_on_for_cpu_and_off_on_gpu():
    from sers.forward import resolve_shared_prefix

    assert resolve_shared_prefix("auto", "cpu") is True
    assert resolve_shared_prefix("auto", "cuda") is False  # two-pass 0.55-0.67× on an H200: off until shown faster
    assert resolve_shared_prefix(True, "cuda") is True and resolve_shared_prefix(False, "cpu") is False
    with pytest.raises(ValueError):
        resolve_shared_prefix("yes", "cpu")
