"""Faster decoding (issue 31) gives the tokens of the path before it, token for token and bit for bit.

`reference_decode_batch` is `sers.generation._decode_batch` as it was at commit 73d326b, frozen here
(every row stays in the batch to the end, the KV cache grows by concatenation, one forward after the
last token): the new path (rows leave at EOS, a preallocated cache) must give the same token ids and
the same log-probability sums, greedy, sampled (same seed) and blended, with rows that stop at
different steps.
"""
from __future__ import annotations

import contextlib
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sers.forward import adapter_kwargs, cache_kwarg, forward_packed, output_cache, pack  # noqa: E402
from sers.generation import (  # noqa: E402
    BASE_ROWS,
    BEFORE,
    Blend,
    Decoding,
    Generated,
    LoraRowGate,
    Sampling,
    _apply_repetition_penalty,
    _decoding_mask,
    _top_p_filter,
    batches_by_length,
    blend_logprobs,
    eos_ids,
    generate,
    preallocate,
    rows_to_keep,
)

from _tiny import lively_lora_model, lively_model, task_prompts, tiny_model_dir, tiny_tokenizer  # noqa: E402,F401

# ---- the path before, frozen at 73d326b ------------------------------------------------------------

@torch.no_grad()
def reference_decode_batch(model, tokenizer, seqs: list[list[int]], sampling: Sampling,
                           generator: torch.Generator | None, blend: Blend | None, share_prefix: bool,
                           route) -> list[Generated]:
    """Decode one batch; `route` routes a blend's θ0 / θt rows (see `forward_packed`)."""
    device = next(model.parameters()).device
    n = len(seqs)
    stop_ids = eos_ids(model, tokenizer)
    if blend is None:
        batch = pack(seqs, tokenizer.pad_token_id, share_prefix)
        logits, cache, mask = forward_packed(model, batch, use_cache=True, logits_to_keep=1)
        adapters = None
    else:  # each row twice: θ0 (adapter off) then θt, one forward for both
        batch = pack(seqs + seqs, tokenizer.pad_token_id, share_prefix)
        adapters = [BASE_ROWS] * n + [blend.adapter] * n
        logits, cache, mask = forward_packed(model, batch, adapter_names=adapters,
                                             prefix_adapters=[BASE_ROWS, blend.adapter], use_cache=True,
                                             logits_to_keep=1, route=route)
    next_logits = logits[:, -1, :].float()
    positions = (batch.prefix_len + batch.suffix_mask.sum(-1)).to(device)  # next position per row
    step_mask = _decoding_mask(model, batch, mask)
    vocab = next_logits.shape[-1]
    seen = None
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros((n, vocab), dtype=torch.bool, device=device)
        for i, s in enumerate(seqs):
            seen[i, torch.tensor(s, device=device).clamp(max=vocab - 1)] = True
    # Tokens stay on the device until the end: one host sync per step (the all-done check), not per row.
    chosen_steps: list[torch.Tensor] = []
    alive_steps: list[torch.Tensor] = []
    stop_tensor = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    logprob = torch.zeros(n, dtype=torch.float64, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(sampling.max_new_tokens):
        if blend is None:
            logp = next_logits.log_softmax(-1)
        else:
            logp = blend_logprobs(next_logits[:n], next_logits[n:], blend.alpha, blend.mode)
        scores = logp
        if seen is not None:
            scores = _apply_repetition_penalty(scores if blend else next_logits, seen, sampling.repetition_penalty)
        if sampling.do_sample:
            scores = _top_p_filter(scores / sampling.temperature, sampling.top_p)
            token = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)
        else:
            token = scores.argmax(-1)
        chosen_lp = logp.gather(-1, token[:, None]).squeeze(-1)
        logprob += torch.where(done, torch.zeros_like(chosen_lp), chosen_lp).double()
        chosen_steps.append(token)
        alive_steps.append(~done)
        if sampling.stop_at_eos:
            done = done | torch.isin(token, stop_tensor)
        if seen is not None:
            seen[torch.arange(n, device=device), token] = True
        if bool(done.all()):
            break
        step_tokens = token if blend is None else torch.cat([token, token])
        if step_mask is not None:  # the new token is seen by every row
            step_mask = torch.cat([step_mask, step_mask.new_zeros(step_mask.shape[0], 1, 1, 1)], dim=-1)
        # `positions` already has a row per packed row (both copies of every row when blending)
        out = model(input_ids=step_tokens[:, None], attention_mask=step_mask, position_ids=positions[:, None],
                    **{cache_kwarg(model): cache}, use_cache=True, **route(adapters))
        cache = output_cache(out)
        next_logits = out.logits[:, -1, :].float()
        positions = positions + 1
    results = []
    chosen = torch.stack(chosen_steps, dim=1).tolist() if chosen_steps else [[] for _ in range(n)]
    alive = torch.stack(alive_steps, dim=1).tolist() if alive_steps else [[] for _ in range(n)]
    logprob_list = logprob.tolist()
    for i in range(n):
        toks = [t for t, keep in zip(chosen[i], alive[i]) if keep]
        if sampling.stop_at_eos and toks and toks[-1] in stop_ids:
            toks = toks[:-1]
        results.append(Generated(toks, tokenizer.decode(toks, skip_special_tokens=True), logprob_list[i]))
    return results


def reference_generate(model, tokenizer, prompts, sampling, batch_size=8, seed=0, blend=None, share_prefix=True,
                       gate_rows=True):
    """`sers.generation.generate` at 73d326b, over `reference_decode_batch`."""
    prompts = [list(p) for p in prompts]
    results = [None] * len(prompts)
    device = next(model.parameters()).device
    gate = LoraRowGate.for_model(model, blend.adapter) if blend is not None and gate_rows else None
    with gate or contextlib.nullcontext():
        route = gate.route if gate is not None else adapter_kwargs
        for b, idx in enumerate(batches_by_length(prompts, batch_size)):
            gen = None
            if sampling.do_sample:
                gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
            for i, g in zip(idx, reference_decode_batch(model, tokenizer, [prompts[i] for i in idx], sampling, gen,
                                                        blend, share_prefix, route)):
                results[i] = g
    return results


# ---- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prompts(tok):
    """14 prompts of two tasks, unequal lengths: batches of 12 (rows leave) and of 2 (they cannot)."""
    return task_prompts(tok, "sa", 9) + task_prompts(tok, "qa", 5)


def ids(gens):
    return [g.token_ids for g in gens]


@contextlib.contextmanager
def stopping_early(model, tok, prompts, steps: int, **kwargs):
    """Make a few frequent tokens stop tokens (the tiny model never says EOS), chosen one by one so that
    most rows, but not all, stop early and at different steps; yields {row: step it stops at}."""
    free = reference_generate(model, tok, prompts, Sampling(max_new_tokens=steps, stop_at_eos=False), **kwargs)
    first: dict[int, dict[int, int]] = {}
    for row, g in enumerate(free):
        for step, t in enumerate(g.token_ids[:-1]):
            first.setdefault(t, {}).setdefault(row, step)

    def stops_of(tokens):
        out: dict[int, int] = {}
        for t in tokens:
            for row, step in first[t].items():
                out[row] = min(step, out.get(row, steps))
        return out

    tokens: list[int] = []
    while len(tokens) < 4 and len(stops_of(tokens)) < len(prompts) * 2 // 3:
        fits = [t for t in first if t not in tokens and len(stops_of(tokens + [t])) <= len(prompts) - 2]
        if not fits:
            break
        tokens.append(max(fits, key=lambda t: (len(stops_of(tokens + [t])), len(set(stops_of(tokens + [t]).values())))))
    config = model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [tok.eos_token_id, *tokens]
    try:
        yield stops_of(tokens)
    finally:
        config.eos_token_id = saved


class BatchSizes:
    """The batch size of every decoding step's forward (a forward pre-hook on the model)."""

    def __init__(self, model):
        self.sizes: list[int] = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        ids_ = kwargs.get("input_ids")
        if ids_ is not None and ids_.shape[1] == 1:
            self.sizes.append(ids_.shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def assert_same(got, ref):
    assert ids(got) == ids(ref)
    assert [g.logprob_sum for g in got] == [r.logprob_sum for r in ref]  # bit for bit
    assert [g.text for g in got] == [r.text for r in ref]


# ---- the new path against the frozen one ------------------------------------------------------------

@pytest.mark.parametrize("decoding", [Decoding(), Decoding(preallocate=False, skip_padding=False),
                                      Decoding(shrink=False, skip_padding=False),
                                      Decoding(shrink=False, preallocate=False), BEFORE],
                         ids=["default", "shrink-only", "preallocate-only", "skip-padding-only", "before"])
def test_greedy_is_the_path_before_token_for_token(model, tok, prompts, decoding, monkeypatch):
    import sers.forward

    skipped = []
    real = sers.forward._real_positions_only
    monkeypatch.setattr(sers.forward, "_real_positions_only", lambda m, mask: skipped.append(mask) or real(m, mask))
    steps = 16
    with stopping_early(model, tok, prompts, steps, batch_size=12) as stops:
        assert len(stops) >= 6 and len(set(stops.values())) >= 3  # rows stop, at different steps
        for batch_size, share in ((12, True), (12, False), (8, True), (2, True)):
            ref = reference_generate(model, tok, prompts, Sampling(max_new_tokens=steps), batch_size,
                                     share_prefix=share)
            with BatchSizes(model) as seen:
                got = generate(model, tok, prompts, Sampling(max_new_tokens=steps), batch_size, share_prefix=share,
                               decoding=decoding)
            assert_same(got, ref)
            if decoding.shrink and batch_size == 12:
                assert 4 in seen.sizes or 8 in seen.sizes, seen.sizes  # rows did leave the batch
            if not decoding.shrink:
                assert set(seen.sizes) <= {batch_size, len(prompts) % batch_size}
    assert bool(skipped) == decoding.skip_padding  # the prompts' padding was left out
    # without early stops as well (every row runs to the end) and with no step at all
    for s in (Sampling(max_new_tokens=steps, stop_at_eos=False), Sampling(max_new_tokens=1), Sampling(max_new_tokens=0)):
        assert_same(generate(model, tok, prompts, s, 12, decoding=decoding), reference_generate(model, tok, prompts, s, 12))


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_sampling_is_the_path_before_for_the_same_seed(model, tok, prompts, penalty):
    """Rows that left the batch still hold their place in the random draws, so every other row draws
    what it drew before."""
    s = Sampling(do_sample=True, temperature=1.2, top_p=0.9, repetition_penalty=penalty, max_new_tokens=14)
    with stopping_early(model, tok, prompts, 14, batch_size=12) as stops:
        assert len(stops) >= 6
        for seed in (3, 4):
            ref = reference_generate(model, tok, prompts, s, 12, seed=seed)
            with BatchSizes(model) as seen:
                got = generate(model, tok, prompts, s, 12, seed=seed)
            assert_same(got, ref)
            assert min(seen.sizes) < 12  # some rows left (they stop at sampled tokens, so not asserted exactly)


@pytest.mark.parametrize("gate_rows", [True, False], ids=["row-gate", "peft-mixed-batch"])
@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_blend_is_the_path_before(lora_model, tok, prompts, gate_rows, do_sample):
    s = Sampling(do_sample=do_sample, temperature=0.9, top_p=0.8, max_new_tokens=12)
    blend = Blend(alpha=0.4)
    with stopping_early(lora_model, tok, prompts, 12, batch_size=12, blend=blend, gate_rows=gate_rows) as stops:
        assert len(stops) >= 6
        ref = reference_generate(lora_model, tok, prompts, s, 12, seed=5, blend=blend, gate_rows=gate_rows)
        with BatchSizes(lora_model) as seen:
            got = generate(lora_model, tok, prompts, s, 12, seed=5, blend=blend, gate_rows=gate_rows)
        assert_same(got, ref)
        assert min(seen.sizes) < 24  # θ0 and θt copies of the rows that stopped left together


# ---- the parts ----------------------------------------------------------------------------------------

def test_rows_to_keep_keeps_a_multiple_of_the_bucket():
    assert rows_to_keep([False] * 12, 4) is None  # nobody stopped
    assert rows_to_keep([True, False] * 6, 4) == [0, 1, 2, 3, 5, 7, 9, 11]  # 6 alive + 2 fillers
    assert rows_to_keep([True] * 9 + [False] * 3, 4) == [0, 9, 10, 11]  # 3 alive + 1 filler
    assert rows_to_keep([True] * 5 + [False] * 7, 4) == [0, 5, 6, 7, 8, 9, 10, 11]
    assert rows_to_keep([True] * 7 + [False], 4) == [0, 1, 2, 7]  # from 8 (a multiple) to 4
    assert rows_to_keep([True] * 13 + [False], 4) == [0, 1, 2, 13]  # from 14 (≥ 12) to 4
    assert rows_to_keep([True] * 6 + [False], 4) is None  # from 7: another matmul kernel, stays whole
    assert rows_to_keep([True, True, False], 4) is None  # never below one bucket from a smaller batch


def test_preallocated_cache_reads_like_the_growing_one_and_grows_past_its_room():
    from transformers import DynamicCache

    torch.manual_seed(0)
    grow, pre = DynamicCache(), DynamicCache()
    for cache in (grow, pre):
        for layer in range(2):
            cache.update(torch.ones(3, 2, 5, 4) * layer, torch.ones(3, 2, 5, 4), layer)
    preallocate(pre, 2)
    assert type(pre.layers[0]).__name__ == "_PreallocatedLayer"
    for step in range(5):  # two steps fit, then it grows
        k, v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
        for layer in range(2):
            a, b = grow.update(k, v, layer), pre.update(k, v, layer)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert pre.get_seq_length() == grow.get_seq_length() == 6 + step
    idx = torch.tensor([2, 0])
    grow.batch_select_indices(idx)
    pre.batch_select_indices(idx)
    assert torch.equal(grow.layers[1].keys, pre.layers[1].keys)
    assert torch.equal(grow.update(k[:2], v[:2], 0)[0], pre.update(k[:2], v[:2], 0)[0])


class _Llama2Shapes:
    """What `fit_batch_size` reads of a model: LLaMA-2-7B's config, bf16 parameters on a GPU."""

    class config:  # noqa: N801
        hidden_size, num_attention_heads, num_key_value_heads, intermediate_size = 4096, 32, 32, 11008
        num_hidden_layers, vocab_size = 32, 32000

    class _Param:
        device = torch.device("cuda")

        def element_size(self):
            return 2

    def parameters(self):
        return iter([self._Param()])


def test_fit_batch_size_fills_free_cuda_memory(monkeypatch):
    from sers.generation import FIT_MEMORY_FRACTION, fit_batch_size, row_bytes

    model = _Llama2Shapes()
    per_row = row_bytes(model, 1024, 512)
    kv = 2 * 32 * 32 * 128 * 2  # LLaMA-2-7B in bf16: 512 KiB of keys and values per token
    assert kv * 1536 < per_row < 1.5 * kv * 1536
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (60 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 4 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2**30)  # 3 GiB cached, free to reuse
    chosen = fit_batch_size(model, 1024, 512, 16)
    assert chosen == int(63 * 2**30 * FIT_MEMORY_FRACTION) // per_row and 40 < chosen < 80
    assert fit_batch_size(model, 1024, 512, 16, copies=2) == int(63 * 2**30 * FIT_MEMORY_FRACTION) // (2 * per_row)
    assert fit_batch_size(model, 16, 8, 16) == 256  # capped
    assert fit_batch_size(model, 1024, 512, 16, free_bytes=10 * 2**30) == int(10 * 2**30 * FIT_MEMORY_FRACTION) // per_row
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**20, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2**30)
    assert fit_batch_size(model, 1024, 512, 16) == 1  # at least one row


def test_fit_batch_size_is_the_configured_one_on_a_cpu(model):
    from sers.generation import fit_batch_size

    assert fit_batch_size(model, 1024, 512, 12) == 12
