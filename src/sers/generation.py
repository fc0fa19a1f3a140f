"""One batched generation path for synthesis, self-evolution and evaluation.

Rows are left-padded; rows that start with the same tokens (every row of a task starts with the
task instruction) share one forward pass over that prefix, whose KV cache is then repeated for
every row — the same maths, computed once. The same machinery scores continuations and computes
the teacher-forced training loss (`sers.forward`), so there is one notion of "a batch" in the whole library.

A row leaves the batch once it has stopped, the KV cache is preallocated for the whole decode, the
prompt's forward skips the rows' padding (`Decoding`): less work for the same tokens. On CUDA,
evaluation and labelling take as many rows per batch as the free memory holds (`fit_batch_size`).

Blend decoding (label self-evolution, METHOD.md §5) runs θ0 and θt in the same forward: the batch
holds each row twice, once with the LoRA adapter switched off, so the weights are read once per step
for both models. Rows are routed by `LoraRowGate` (a 0/1 gate on the LoRA input, kept on the device)
where it applies, else by peft's mixed-adapter batches (`adapter_names="__base__"`).
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import DynamicLayer

from .forward import PackedBatch, adapter_kwargs, cache_kwarg, forward_packed, output_cache, pack
from .progress import progress


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. Greedy unless `do_sample`."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 128
    stop_at_eos: bool = True  # False makes every row produce exactly max_new_tokens (benchmarks)


@dataclass(frozen=True)
class Blend:
    """p = α·p_θ0 + (1−α)·p_θt; `mode="logit"` mixes exp(raw logits) as the released code did."""

    alpha: float
    mode: str = "probability"
    adapter: str = "default"


@dataclass
class Generated:
    token_ids: list[int]
    text: str
    logprob_sum: float  # of the chosen tokens under the decoding distribution (before sampling tweaks)

    @property
    def mean_logprob(self) -> float:
        return self.logprob_sum / max(1, len(self.token_ids))


BASE_ROWS = "__base__"  # peft's adapter name for "no adapter" in a mixed batch


class LoraRowGate:
    """θ0 rows and θt rows in one batch, routed by a 0/1 gate on every LoRA input instead of peft's
    mixed-adapter batches.

    peft routes a mixed batch inside every LoRA layer with Python index lists: per layer and forward a
    host-to-device copy of the indices, a gather of the θt rows and a scatter-add back, and per forward
    a pre-hook registered on every LoRA module. In a decode loop that is hundreds of small transfers
    and kernels per token. Here each LoRA A matrix's input is multiplied by a per-row gate that stays
    on the device (one kernel per layer, no transfer): a gated-off row adds lora_B(lora_A(0)) = 0 to the
    base output, which is θ0 exactly; a gated-on row is θt exactly.

    Applies to a peft model whose only active adapter is `adapter`, plain LoRA on linear layers (no
    DoRA or other variant, no LoRA bias, not merged); `for_model` returns None where it does not."""

    def __init__(self, layers: list, adapter: str, device: torch.device):
        self.layers, self.adapter, self.device = layers, adapter, device
        self.dtype = layers[0].lora_A[adapter].weight.dtype  # peft casts the LoRA input to it: no cast per layer
        self._gates: dict[tuple[str, ...], torch.Tensor] = {}
        self._gate: torch.Tensor | None = None
        self._handles: list = []

    @classmethod
    def for_model(cls, model, adapter: str) -> "LoraRowGate | None":
        layers = _gateable_lora_layers(model, adapter)
        return cls(layers, adapter, next(model.parameters()).device) if layers else None

    def __enter__(self) -> "LoraRowGate":
        self._handles = [layer.lora_A[self.adapter].register_forward_pre_hook(self._gate_input)
                         for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._gate = [], None

    def route(self, adapter_names: list[str] | None) -> dict:
        """Set the gate for a forward over rows named `adapter_names`; return the model call's kwargs
        (none: the gate does the routing). Each distinct row layout is copied to the device once."""
        key = tuple(adapter_names or ())
        gate = self._gates.get(key)
        if gate is None:
            unknown = set(key) - {BASE_ROWS, self.adapter}
            if not key or unknown:
                raise ValueError(f"LoraRowGate routes {BASE_ROWS!r} and {self.adapter!r} rows, not {sorted(unknown)}")
            gate = torch.tensor([name != BASE_ROWS for name in key], dtype=self.dtype, device=self.device)
            self._gates[key] = gate
        self._gate = gate
        return {}

    def _gate_input(self, module, args):
        x = args[0]
        if self._gate is None or x.shape[0] != self._gate.shape[0]:
            raise RuntimeError("LoraRowGate: a forward ran without a gate for its rows (call route first)")
        return (x * self._gate.to(x.dtype).view(-1, *([1] * (x.dim() - 1))), *args[1:])


def _gateable_lora_layers(model, adapter: str) -> list:
    """The LoRA layers `LoraRowGate` would gate, or [] where it does not apply."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    if list(getattr(model, "active_adapters", None) or []) != [adapter]:
        return []
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and adapter in m.lora_A]
    for m in layers:
        if (m.merged or adapter in getattr(m, "lora_variant", {}) or getattr(m, "lora_bias", {}).get(adapter)
                or adapter in getattr(m, "lora_embedding_A", {})
                or getattr(m.lora_A[adapter], "bias", None) is not None):
            return []
    return layers


def _apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    # HF semantics: divide positive logits, multiply negative ones, for every token already present.
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass reaches top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def blend_logprobs(logits_base: torch.Tensor, logits_tuned: torch.Tensor, alpha: float, mode: str) -> torch.Tensor:
    """log(α·p_θ0 + (1−α)·p_θt) computed in log space; `logit` mode mixes exp(raw logits)."""
    if mode == "probability":
        a, b = logits_base.float().log_softmax(-1), logits_tuned.float().log_softmax(-1)
    elif mode == "logit":
        a, b = logits_base.float(), logits_tuned.float()
    else:
        raise ValueError(f"unknown blend mode {mode!r}")
    log_alpha = math.log(alpha) if alpha > 0 else float("-inf")
    log_beta = math.log(1 - alpha) if alpha < 1 else float("-inf")
    mixed = torch.logaddexp(a + log_alpha, b + log_beta)
    return mixed.log_softmax(-1)  # a no-op for probabilities; normalises the logit mixture


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen if isinstance(gen, list) else [gen])
    return {i for i in ids if i is not None}


def _decoding_mask(model, batch: PackedBatch, mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask of the decoding steps: none when no row is padded, else a ready 4D additive
    mask [rows, 1, 1, keys] (0 where a row attends, the dtype's minimum at its padding).

    Given the 2D padding mask instead, transformers checks on every step whether it is all ones
    (`masking_utils`: `fast_all(padding_mask)`), a host sync per token on a GPU; a 4D mask is used as
    it is. Whether any row is padded is read from the packed batch, which is still on the host."""
    if not bool((batch.suffix_mask == 0).any()):
        return None
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


@dataclass(frozen=True)
class Decoding:
    """How a batch is decoded, not what: on a CPU in float32 every setting gives the same tokens and the
    same log-probabilities, bit for bit (tests/test_decoding_speed.py; SmolLM2 on the default run's eval
    rows: benchmarks/eval_throughput.py). On a GPU in bf16 that is not shown (benchmarks/README.md).

    `shrink`: a row leaves the batch once it has stopped (EOS); its KV cache rows, position, mask and
    logits go with it, so the later steps compute only the rows still generating. The batch keeps a
    multiple of `row_bucket` rows (finished rows stay as fillers up to it) and shrinks only from a size
    that already is one or is at least 3·`row_bucket`: a matmul's row gets the same bits at any such M
    on this machine's CPU (MKL sgemm, 1–4 threads; M = 1–3 and, at 2 threads, 5–7 and 9–11 take other
    kernels, benchmarks/README.md), so rows leaving changes no float of the rows that stay.
    `preallocate`: the KV cache lives in a buffer sized for the whole decode, and a step writes its
    token in place instead of concatenating (copying) every layer's cache per token.
    `skip_padding`: the prompt's forward leaves the rows' left padding out of the linear layers
    (`sers.forward.forward_packed`), which is most of its work; the real positions get the same bits."""

    shrink: bool = True
    row_bucket: int = 4
    preallocate: bool = True
    skip_padding: bool = True


BEFORE = Decoding(shrink=False, preallocate=False, skip_padding=False)  # the path before issue 31 (comparisons)


class _PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of a buffer with room for `capacity` positions.

    Attention reads `keys` / `values` as before (views of the same length, so the same maths); `update`
    copies the new positions into the buffer instead of concatenating the whole cache. Past the
    capacity it grows (doubling), so it never fails."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        self.device, self.is_initialized, self.length = keys.device, True, keys.shape[-2]
        shape = (*keys.shape[:-2], max(capacity, self.length), keys.shape[-1])
        self._k, self._v = keys.new_empty(shape), values.new_empty(shape)
        self._k[..., :self.length, :].copy_(keys)
        self._v[..., :self.length, :].copy_(values)
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._k[..., :self.length, :], self._v[..., :self.length, :]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[-2]:
            grown = (*self._k.shape[:-2], max(end, 2 * self._k.shape[-2]), self._k.shape[-1])
            self._k = torch.cat([self._k, self._k.new_empty(grown)[..., self._k.shape[-2]:, :]], dim=-2)
            self._v = torch.cat([self._v, self._v.new_empty(grown)[..., self._v.shape[-2]:, :]], dim=-2)
        self._k[..., self.length:end, :].copy_(key_states)
        self._v[..., self.length:end, :].copy_(value_states)
        self.length = end
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k.index_select(0, indices), self._v.index_select(0, indices)
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._k, self._v = self._k.repeat_interleave(repeats, dim=0), self._v.repeat_interleave(repeats, dim=0)
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a preallocated decoding cache is not cropped")


def preallocate(cache, extra: int):
    """`cache` with each plain `DynamicLayer` moved into a buffer with room for `extra` more positions."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return cache
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4:
            layers[i] = _PreallocatedLayer(layer.keys, layer.values, layer.keys.shape[-2] + extra)
    return cache


def _same_kernel(rows: int, bucket: int) -> bool:
    """Whether a matmul over `rows` rows gives each row the bits it gets at any larger such size."""
    return rows % bucket == 0 or rows >= 3 * bucket


def rows_to_keep(done: list[bool], bucket: int) -> list[int] | None:
    """The batch rows the next step keeps (every unfinished row, then finished ones up to a multiple of
    `bucket`, in batch order), or None to keep them all."""
    m = len(done)
    alive = [i for i, d in enumerate(done) if not d]
    target = -(-len(alive) // bucket) * bucket
    if target >= m or not _same_kernel(m, bucket):
        return None
    fillers = [i for i, d in enumerate(done) if d][:target - len(alive)]
    return sorted(alive + fillers)


def _sample(scores: torch.Tensor, rows: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """One token per batch row drawn from softmax(scores), with the random numbers a batch of all `n`
    rows would use: `torch.multinomial` (one sample) draws one exponential per (row, token) of its
    input, so the rows that left are put back as placeholders and each row keeps its own draws."""
    probs = scores.softmax(-1)
    if probs.shape[0] == n:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    full = probs.new_zeros((n, probs.shape[1]))
    full[:, 0] = 1.0  # a placeholder distribution for the rows that left
    full.index_copy_(0, rows, probs)
    return torch.multinomial(full, 1, generator=generator).squeeze(-1).index_select(0, rows)


@torch.no_grad()
def _decode_batch(model, tokenizer, seqs: list[list[int]], sampling: Sampling, generator: torch.Generator | None,
                  blend: Blend | None, share_prefix: bool, route, decoding: Decoding = Decoding()) -> list[Generated]:
    """Decode one batch; `route` routes a blend's θ0 / θt rows (see `forward_packed`)."""
    device = next(model.parameters()).device
    n = len(seqs)
    stop_ids = eos_ids(model, tokenizer)
    if blend is None:
        batch = pack(seqs, tokenizer.pad_token_id, share_prefix)
        logits, cache, mask = forward_packed(model, batch, use_cache=True, logits_to_keep=1,
                                             skip_padding=decoding.skip_padding)
        adapters = None
    else:  # each row twice: θ0 (adapter off) then θt, one forward for both
        batch = pack(seqs + seqs, tokenizer.pad_token_id, share_prefix)
        adapters = [BASE_ROWS] * n + [blend.adapter] * n
        logits, cache, mask = forward_packed(model, batch, adapter_names=adapters,
                                             prefix_adapters=[BASE_ROWS, blend.adapter], use_cache=True,
                                             logits_to_keep=1, route=route, skip_padding=decoding.skip_padding)
    steps = sampling.max_new_tokens
    if decoding.preallocate and steps > 1:
        cache = preallocate(cache, steps - 1)
    next_logits = logits[:, -1, :].float()
    positions = (batch.prefix_len + batch.suffix_mask.sum(-1)).to(device)  # next position per row
    step_mask = _decoding_mask(model, batch, mask)
    vocab = next_logits.shape[-1]
    seen = None
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros((n, vocab), dtype=torch.bool, device=device)
        for i, s in enumerate(seqs):
            seen[i, torch.tensor(s, device=device).clamp(max=vocab - 1)] = True
    # Tokens stay on the device until the end: one host read per step (which rows are done), not per row.
    # `rows`: the input row of each batch row (of each θ0 row when blending; its θt copy sits m rows on).
    rows = torch.arange(n, device=device)
    m = n
    chosen = torch.zeros((n, max(steps, 1)), dtype=torch.long, device=device)
    alive = torch.zeros((n, max(steps, 1)), dtype=torch.bool, device=device)
    stop_tensor = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    logprob = torch.zeros(n, dtype=torch.float64, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for step in range(steps):
        if blend is None:
            logp = next_logits.log_softmax(-1)
        else:
            logp = blend_logprobs(next_logits[:m], next_logits[m:], blend.alpha, blend.mode)
        scores = logp
        if seen is not None:
            scores = _apply_repetition_penalty(scores if blend else next_logits, seen, sampling.repetition_penalty)
        if sampling.do_sample:
            token = _sample(_top_p_filter(scores / sampling.temperature, sampling.top_p), rows, n, generator)
        else:
            token = scores.argmax(-1)
        chosen_lp = logp.gather(-1, token[:, None]).squeeze(-1)
        logprob.index_add_(0, rows, torch.where(done, torch.zeros_like(chosen_lp), chosen_lp).double())
        chosen[rows, step] = token
        alive[rows, step] = ~done
        if sampling.stop_at_eos:
            done = done | torch.isin(token, stop_tensor)
        if seen is not None:
            seen[torch.arange(m, device=device), token] = True
        if step == steps - 1:
            break  # the last token is chosen: no forward for a next one
        done_now = done.tolist()  # the step's one host read
        if all(done_now):
            break
        keep = rows_to_keep(done_now, decoding.row_bucket) if decoding.shrink else None
        if keep is not None:  # the finished rows leave: every per-row tensor and the KV cache follow
            idx = torch.tensor(keep, dtype=torch.long, device=device)
            rows, done, token = rows[idx], done[idx], token[idx]
            if seen is not None:
                seen = seen[idx]
            both = idx if blend is None else torch.cat([idx, idx + m])
            cache.batch_select_indices(both)
            positions = positions[both]
            if step_mask is not None:
                step_mask = step_mask[both]
            m = len(keep)
            if blend is not None:
                adapters = [BASE_ROWS] * m + [blend.adapter] * m
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
    chosen_list, alive_list = chosen[:, :steps].tolist(), alive[:, :steps].tolist()
    logprob_list = logprob.tolist()
    for i in range(n):
        toks = [t for t, keep in zip(chosen_list[i], alive_list[i]) if keep]
        if sampling.stop_at_eos and toks and toks[-1] in stop_ids:
            toks = toks[:-1]
        results.append(Generated(toks, tokenizer.decode(toks, skip_special_tokens=True), logprob_list[i]))
    return results


# Batch size on CUDA (`fit_batch_size`): at most this many rows, in this share of the free memory
MAX_FIT_BATCH = 256
FIT_MEMORY_FRACTION = 0.8


def row_bytes(model, prompt_tokens: int, new_tokens: int) -> int:
    """Device memory one row of a generation batch needs, at most: its KV cache for the whole decode (the
    preallocated buffer; the prompt's cache moves into it one layer at a time), the prompt forward's
    activations (one layer's at a time), and the float32 logits of a decoding step (with their
    log-softmax and sampling buffers)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = cfg.hidden_size
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    ff = getattr(cfg, "intermediate_size", None) or 4 * hidden
    elt = next(model.parameters()).element_size()
    kv_per_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * elt
    cache = kv_per_token * (prompt_tokens + new_tokens) + kv_per_token * prompt_tokens // cfg.num_hidden_layers
    activations = prompt_tokens * (6 * hidden + 3 * ff) * elt + prompt_tokens * heads * 4  # + SDPA row stats
    logits = 6 * cfg.vocab_size * 4
    return cache + activations + logits


def fit_batch_size(model, prompt_tokens: int, new_tokens: int, configured: int, copies: int = 1,
                   cap: int = MAX_FIT_BATCH, free_bytes: int | None = None) -> int:
    """Rows per generation batch: `configured` off CUDA; on CUDA as many as `FIT_MEMORY_FRACTION` of the
    free memory holds (`row_bytes` for prompts up to `prompt_tokens`; `copies` = 2 for a blend, whose
    batch holds every row twice), between 1 and `cap`.

    Decoding reads every weight once per step whatever the batch, so on a GPU more rows per step are
    almost free until the memory or the compute runs out; a fixed batch (16 for the paper preset) left
    most of an 80 GB card idle. The choice is logged (the job's log). `free_bytes` overrides the free
    memory read from the device (a benchmark that emulates a smaller card)."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return configured
    free = free_bytes
    if free is None:
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # torch's cache, reusable
    per_row = row_bytes(model, prompt_tokens, new_tokens) * copies
    chosen = max(1, min(cap, int(free * FIT_MEMORY_FRACTION) // per_row))
    logging.getLogger(__name__).info(
        "generation batch size %d (configured %d): %.1f GiB free, %.0f MiB per row (%d prompt + %d new tokens%s)",
        chosen, configured, free / 2**30, per_row / 2**20, prompt_tokens, new_tokens,
        ", blend" if copies == 2 else "")
    return chosen


def batches_by_length(seqs: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), in a deterministic order."""
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate(model, tokenizer, prompts: Sequence[Sequence[int]], sampling: Sampling, batch_size: int = 8,
             seed: int = 0, blend: Blend | None = None, share_prefix: bool = True,
             desc: str | None = None, gate_rows: bool = True, decoding: Decoding = Decoding()) -> list[Generated]:
    """Generate a continuation for every prompt (token ids), in input order.

    Sampling draws from a generator seeded by `seed` and the batch's position, so the same inputs
    and settings give the same outputs on the same device. `gate_rows=False` routes a blend's rows
    with peft's mixed-adapter batches even where `LoraRowGate` applies (for comparison). `decoding`
    says how a batch is decoded (`BEFORE`: the path before rows left the batch, for comparison).
    """
    prompts = [list(p) for p in prompts]
    results: list[Generated | None] = [None] * len(prompts)
    groups = batches_by_length(prompts, batch_size)
    device = next(model.parameters()).device
    # a blend's rows are routed by one LoraRowGate for every batch where it applies, else by peft
    gate = LoraRowGate.for_model(model, blend.adapter) if blend is not None and gate_rows else None
    with gate or contextlib.nullcontext():
        route = gate.route if gate is not None else adapter_kwargs
        for b, idx in enumerate(progress(groups, desc=desc or "generate", unit="batch")):
            gen = None
            if sampling.do_sample:
                gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
            for i, g in zip(idx, _decode_batch(model, tokenizer, [prompts[i] for i in idx], sampling, gen, blend,
                                               share_prefix, route, decoding)):
                results[i] = g
    return results  # type: ignore[return-value]


def continuation_logprobs(model, pad_id: int, prompts: Sequence[Sequence[int]],
                          continuations: Sequence[Sequence[int]], batch_size: int = 8,
                          share_prefix: bool = True) -> list[list[float]]:
    """Per-token log p(continuation | prompt) for every pair (teacher forcing, batched)."""
    seqs = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    out: list[list[float] | None] = [None] * len(seqs)
    with torch.no_grad():
        for idx in batches_by_length(seqs, batch_size):
            # the shared prefix must end before every row's last prompt token (not only the row with the
            # shortest continuation): p ≤ min(len) − keep = min(prompt len) − 1
            keep = min(len(seqs[i]) for i in idx) - min(len(prompts[i]) for i in idx) + 1
            batch = pack([seqs[i] for i in idx], pad_id, share_prefix, keep_last=keep)
            window = max(len(continuations[i]) for i in idx) + 1  # the positions that predict a continuation
            logits, _, _ = forward_packed(model, batch, logits_to_keep=window)
            logp = logits.float().log_softmax(-1)
            width = batch.suffix.shape[1]
            for row, i in enumerate(idx):
                n_cont = len(continuations[i])
                if n_cont == 0:
                    out[i] = []
                    continue
                targets = batch.suffix[row, width - n_cont:].to(logp.device)
                preds = logp[row, window - n_cont - 1: window - 1]
                out[i] = preds.gather(-1, targets[:, None]).squeeze(-1).tolist()
    return out  # type: ignore[return-value]
