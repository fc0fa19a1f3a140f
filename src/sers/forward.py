"""The model's forward over a batch of rows that share a prefix: one home for every teacher-forced and
prefill forward (training loss, continuation scoring, the first decoding step).

Rows of one task start with the same instruction. `pack` splits a batch into that shared prefix and
left-padded suffixes; `forward_packed` runs the prefix once and every suffix against its repeated KV
cache (the two-pass layout). `target_logits` is the training loss's forward: plain, two-pass, or one
packed sequence (below), whichever `choose_layout` picks for the batch.

The teacher-forced forward of a batch whose rows share a prefix, as one packed sequence.

The two-pass layout (`sers.forward.forward_packed`) runs the shared prefix once, then every row's
suffix against the prefix's repeated KV cache: two model calls, so twice the kernel launches. On an
H200 at 0.92 B parameters the host's launch time bounded the training step, and that layout ran at
0.55–0.67× of the plain one although it did a third of the GPU work (benchmarks/README.md).

Packing lays a batch out as one sequence, [prefix][suffix 1][suffix 2]…[suffix R]: one model call,
no padding, no cache. Each suffix's position ids restart right after the prefix, and a 4D mask lets a
token see the prefix and the earlier tokens of its own suffix only, so every row computes what it
would alone: the same logits, loss and gradients as the plain layout. Only the positions that
predict a target token reach the LM head (`logits_to_keep`).

The price is dense attention over the whole pack: L² (query, key) pairs for L packed tokens, where
the two-pass layout has Σ S·(P+S). `LayerCost` counts a decoder layer's FLOPs from the model's
config; rows go into several packs (each with its own copy of the prefix) where one pack would cost
more, and `choose_layout` takes the packed layout for a batch unless the count makes it clearly
dearer than the two-pass one.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import DynamicCache

try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # transformers without the per-layer checkpointing wrapper: no checkpointed shared prefix
    GradientCheckpointingLayer = None

from .errors import SersError

IGNORE = -100  # label of a position that predicts no target token

MIN_SHARED_PREFIX = 4  # below this a separate prefix pass costs more than it saves
# Where `shared_prefix: auto` turns the shared prefix on: measured faster on CPU (SmolLM2, 2 cores,
# 2026-11-28: training 6.3× (pos) and 2.8× (sa) tokens/s in the packed layout, evaluation 2.7× and 1.1×
# rows/s). Off on a GPU: on an H200 (random 0.92B LLaMA, bf16, 2026-11-28) two-pass training ran at 0.55×
# (pos) and 0.67× (sa), evaluation at 0.98× and 0.92×; it did a third of the GPU work but launched twice
# the kernels, and at that size the host bounds the step. The packed layout (`sers.forward`, one
# pass) is not yet measured on a GPU (benchmarks/README.md).
SHARED_PREFIX_AUTO_DEVICES = frozenset({"cpu"})


def resolve_shared_prefix(setting: bool | str, device) -> bool:
    """`training.shared_prefix` (true, false or "auto") for a model on `device`."""
    if setting == "auto":
        return torch.device(device).type in SHARED_PREFIX_AUTO_DEVICES
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"training.shared_prefix: {setting!r} is not true, false or auto")


@dataclass
class PackedBatch:
    """Rows laid out as [shared prefix][left padding][own suffix]."""

    prefix: torch.Tensor          # [P]
    suffix: torch.Tensor          # [R, S], left-padded
    suffix_mask: torch.Tensor     # [R, S]
    lengths: list[int] = field(default_factory=list)  # full length of each row

    @property
    def prefix_len(self) -> int:
        return int(self.prefix.numel())


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        tok = first[i]
        if any(s[i] != tok for s in seqs):
            return i
    return n


def shared_prefix_len(seqs: Sequence[Sequence[int]], keep_last: int = 1) -> int:
    """The prefix a batch computes once: the rows' common prefix, leaving each row ≥ `keep_last` tokens
    of its own (0 for a single row or below `MIN_SHARED_PREFIX`)."""
    if len(seqs) < 2:
        return 0
    p = min(common_prefix_len(seqs), min(len(s) for s in seqs) - keep_last)
    return p if p >= MIN_SHARED_PREFIX else 0


def pack(seqs: Sequence[Sequence[int]], pad_id: int, share_prefix: bool, keep_last: int = 1) -> PackedBatch:
    """Split rows into a shared prefix and left-padded suffixes (each keeps ≥ `keep_last` tokens)."""
    p = shared_prefix_len(seqs, keep_last) if share_prefix else 0
    suffixes = [list(s[p:]) for s in seqs]
    width = max(len(s) for s in suffixes)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(suffixes):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return PackedBatch(torch.tensor(list(seqs[0][:p]), dtype=torch.long), ids, mask, [len(s) for s in seqs])


def adapter_kwargs(adapter_names: list[str] | None) -> dict:
    return {} if adapter_names is None else {"adapter_names": adapter_names}


_CACHE_KWARG: dict[type, str] = {}


def cache_kwarg(model) -> str:
    """Transformers ≥ 5.24 names the KV cache `cache`; earlier releases `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kind = type(base)
    if kind not in _CACHE_KWARG:
        params = inspect.signature(kind.forward).parameters
        _CACHE_KWARG[kind] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KWARG[kind]


def output_cache(out):
    try:  # read `past_key_values` only where there is no `cache`: ≥ 5.24 warns that it is deprecated
        return out.cache
    except AttributeError:
        return out.past_key_values


def _checkpointing_modules(model) -> list[torch.nn.Module]:
    """The modules that checkpoint in this forward (the decoder layers, and the model that turns its
    cache off): none in eval mode, under no_grad, or without `training.gradient_checkpointing`."""
    if not (model.training and torch.is_grad_enabled()):
        return []
    modules = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    if modules and not hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache"):
        # older transformers drop the cache of every checkpointed layer: the suffix would not see the prefix
        raise SersError("training.gradient_checkpointing with training.shared_prefix needs a transformers release "
                        "whose checkpointed layers can read a cache (5.x); set training.shared_prefix: false")
    return modules


@contextlib.contextmanager
def _layer_flags(layers: Sequence[torch.nn.Module], **flags):
    """Set attributes on `layers` for the duration of a forward, then restore the previous values."""
    saved = [{k: m.__dict__[k] for k in flags if k in m.__dict__} for m in layers]
    for m in layers:
        for k, v in flags.items():
            setattr(m, k, v)
    try:
        yield
    finally:
        for m, before in zip(layers, saved):
            for k in flags:
                if k in before:
                    setattr(m, k, before[k])
                else:
                    delattr(m, k)  # back to the class attribute


class _ReadOnlyCache(DynamicCache):
    """A shared prefix's KV cache that attention reads but never extends.

    Under activation checkpointing each decoder layer runs twice (forward, then the recompute in the
    backward pass); a cache the layer appended to would hold the suffix twice on the recompute, so
    transformers drops the cache of a checkpointed layer altogether. Read-only, both runs see the
    same prefix keys and values, and gradients still reach the prefix through them."""

    def __init__(self, source: DynamicCache):  # shares the source's layers, copies no tensor
        self.__dict__.update(source.__dict__)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        layer = self.layers[layer_idx]
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)


# Model types whose layers mix positions in attention only (every other layer works token by token): in
# a forward over left-padded rows their linear layers may skip the padding (`_real_positions_only`).
PER_TOKEN_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"})
# Fewer real tokens than this: no skipping (a matmul over few rows may take another kernel, other bits)
MIN_SKIP_TOKENS = 16


def _skippable_linears(model) -> list[torch.nn.Linear]:
    """The linear layers of the decoder blocks (not the LM head, not LoRA's own A and B matrices, not a
    layer whose forward is already replaced on the instance, as accelerate's offloading hooks do)."""
    head = model.get_output_embeddings()
    return [m for name, m in model.named_modules()
            if type(m) is torch.nn.Linear and m is not head and "lora_" not in name and "forward" not in m.__dict__]


@contextlib.contextmanager
def _real_positions_only(model, suffix_mask: torch.Tensor):
    """For one inference forward over left-padded rows [R, S] (`suffix_mask`, on the host): every linear
    layer of the decoder blocks computes the real positions only, and gives the padding zeros.

    The padding's own activations are never read by a real position: attention masks it out, every other
    layer works token by token. Its keys and values (now zeros instead of whatever the pad token made)
    meet the mask, and a masked score is the dtype's minimum either way (a finite q·k vanishes against
    it), so the real positions get the same bits. The matmul over the gathered real tokens gives each
    token the bits it got in the padded one (both have ≥ `MIN_SKIP_TOKENS` rows: the same kernel).
    Saved: the padding's share of the linear layers' work (most of a forward's)."""
    shape = tuple(suffix_mask.shape)
    device = next(model.parameters()).device
    idx = suffix_mask.reshape(-1).nonzero().squeeze(1).to(device)
    total = suffix_mask.numel()

    def linear(module):
        def forward(x):
            if tuple(x.shape[:-1]) != shape:  # not a per-position input of this forward: as nn.Linear does
                return torch.nn.functional.linear(x, module.weight, module.bias)
            y = torch.nn.functional.linear(x.reshape(total, -1).index_select(0, idx), module.weight, module.bias)
            return y.new_zeros(total, y.shape[-1]).index_copy_(0, idx, y).view(*shape, -1)
        return forward

    layers = _skippable_linears(model)
    for m in layers:
        m.forward = linear(m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward  # back to nn.Linear.forward


def _skips_padding(model, suffix_mask: torch.Tensor) -> bool:
    """Whether an inference forward over these left-padded rows can leave out the padding."""
    real = int(suffix_mask.sum())
    kind = getattr(model.config, "model_type", None)
    return (kind in PER_TOKEN_MODEL_TYPES and not torch.is_grad_enabled() and real < suffix_mask.numel()
            and real >= MIN_SKIP_TOKENS)


def forward_packed(model, batch: PackedBatch, adapter_names: list[str] | None = None,
                   prefix_adapters: list[str] | None = None, use_cache: bool = False, logits_to_keep: int = 0,
                   route=adapter_kwargs, skip_padding: bool = False):
    """Run the model over a packed batch; return (logits over the suffix [R, S, V], cache, mask).

    `logits_to_keep` > 0 keeps only the last that many positions' logits (generation needs one, the
    training loss those that predict a target): the LM head is a large share of a small model's work.
    `route` turns a
    forward's per-row adapter names into the model call's kwargs (peft's `adapter_names` by default,
    or `LoraRowGate.route`).

    With a shared prefix, the prefix runs once per distinct adapter in `prefix_adapters` (rows must
    be grouped by adapter, in that order) and its cache is repeated across the rows of each group.
    With activation checkpointing on (training), the prefix runs without it (one row per group: its
    activations are small) and the suffix reads the prefix cache read-only (`_ReadOnlyCache`); the
    returned cache then holds the prefix alone.

    `skip_padding` (inference only, where `_skips_padding`): the suffix's linear layers compute its real
    positions only (`_real_positions_only`): the same bits at the real positions, less work.
    """
    device = next(model.parameters()).device
    rows = batch.suffix.shape[0]
    p = batch.prefix_len
    suffix = batch.suffix.to(device)
    suffix_mask = batch.suffix_mask.to(device)
    cache = None
    checkpointed = _checkpointing_modules(model) if p else []
    if p:
        groups = prefix_adapters or [None]
        prefix = batch.prefix.to(device)[None].expand(len(groups), -1)
        kwargs = route(prefix_adapters)
        with _layer_flags(checkpointed, gradient_checkpointing=False):  # the model would turn its cache off
            out = model(input_ids=prefix, use_cache=True, logits_to_keep=1, **kwargs)
        cache = output_cache(out)
        cache.batch_repeat_interleave(rows // len(groups))
        if checkpointed:
            cache = _ReadOnlyCache(cache)
    mask = torch.cat([torch.ones(rows, p, dtype=torch.long, device=device), suffix_mask], dim=1)
    positions = (p + suffix_mask.cumsum(-1) - 1).clamp(min=0)
    if cache is None and use_cache:
        cache = DynamicCache()
    # a checkpointed layer keeps a cache only if it is marked as a reader (ours is, read-only)
    layers = [m for m in checkpointed if isinstance(m, GradientCheckpointingLayer)]
    skip = skip_padding and _skips_padding(model, batch.suffix_mask)
    with _layer_flags(layers, _can_checkpoint_with_cache=True), \
            (_real_positions_only(model, batch.suffix_mask) if skip else contextlib.nullcontext()):
        out = model(input_ids=suffix, attention_mask=mask, position_ids=positions, **{cache_kwarg(model): cache},
                    use_cache=(use_cache or p > 0) and not checkpointed, logits_to_keep=logits_to_keep,
                    **route(adapter_names))
    return out.logits, (cache if checkpointed else output_cache(out)), mask


LAYOUTS = ("plain", "two_pass", "packed")
# attention implementations that take a custom 4D mask as it is, and the mask each expects
PACKABLE_ATTENTION = {"sdpa": "bool", "eager": "additive"}
# A pack's mask is dense (L × L): a cap that keeps it (and eager attention's L² scores) small
MAX_PACK_TOKENS = 8192
# Packed is chosen unless its counted FLOPs exceed the two-pass layout's by more than this factor. The
# count leaves out the second pass's fixed costs (kernel launches: what made two passes slow on an H200).
# On CPU (SmolLM2, 2026-11-28) packed ran faster at counted ratios up to 1.18, but for 16 equal 300-token
# suffixes (7% slower at 1.18); with this margin the faster layout was chosen in 7 of 8 batches
# (benchmarks/README.md, "The packed shared-prefix layout"). On a GPU it is unmeasured.
PACKED_FLOP_MARGIN = 1.15


@dataclass(frozen=True)
class LayerCost:
    """FLOPs of one decoder layer: `per_token` for its matmuls (projections and MLP), `per_pair` for
    attention's two products per (query, key) pair. Only their ratio decides a layout."""

    per_token: float
    per_pair: float

    @classmethod
    def of(cls, model) -> "LayerCost":
        cfg = model.config
        d = getattr(cfg, "hidden_size", None) or cfg.n_embd
        heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
        head_dim = getattr(cfg, "head_dim", None) or d // heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        ff = getattr(cfg, "intermediate_size", None) or 4 * d
        q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
        return cls(per_token=2.0 * (2 * d * q_dim + 2 * d * kv_dim + 3 * d * ff), per_pair=4.0 * q_dim)


def packs(prefix_len: int, suffix_lens: Sequence[int], cost: LayerCost) -> list[list[int]]:
    """Rows (indices, in order) of each pack: a suffix joins the open pack while that costs no more
    than starting a new pack, which repeats the prefix (its tokens and their attention)."""
    p, out, length = prefix_len, [], 0
    for i, s in enumerate(suffix_lens):
        joined = cost.per_pair * ((length + s) ** 2 - length ** 2)
        alone = cost.per_token * p + cost.per_pair * (p + s) ** 2
        if out and length + s <= MAX_PACK_TOKENS and joined <= alone:
            out[-1].append(i)
            length += s
        else:
            out.append([i])
            length = p + s
    return out


def layout_costs(prefix_len: int, suffix_lens: Sequence[int], cost: LayerCost) -> dict[str, float]:
    """FLOPs of one decoder layer over the batch in each layout (plain and two-pass are left-padded to
    the longest row and attend densely over the padded width, as SDPA does with a padding mask)."""
    p, rows = prefix_len, len(suffix_lens)
    width = max(suffix_lens)

    def flops(tokens, pairs):
        return cost.per_token * tokens + cost.per_pair * pairs

    lengths = [p + sum(suffix_lens[i] for i in rows_) for rows_ in packs(p, suffix_lens, cost)]
    return {"plain": flops(rows * (p + width), rows * (p + width) ** 2),
            "two_pass": flops(p + rows * width, p * p + rows * width * (p + width)),
            "packed": flops(sum(lengths), sum(n * n for n in lengths))}


def packable(model) -> bool:
    return getattr(model.config, "_attn_implementation", None) in PACKABLE_ATTENTION


def choose_layout(model, prefix_len: int, suffix_lens: Sequence[int]) -> str:
    """The layout of a batch: plain without a shared prefix, else packed unless its counted FLOPs exceed
    the two-pass layout's by more than `PACKED_FLOP_MARGIN` (two-pass where the attention implementation
    takes no custom mask, e.g. flash-attention)."""
    if prefix_len == 0:
        return "plain"
    if not packable(model):
        return "two_pass"
    costs = layout_costs(prefix_len, suffix_lens, LayerCost.of(model))
    return "packed" if costs["packed"] <= PACKED_FLOP_MARGIN * costs["two_pass"] else "two_pass"


def _pack_mask(segments: torch.Tensor, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, L, L]: causal, and a token sees the prefix (segment 0) and its own segment only."""
    same = (segments[:, None] == segments[None, :]) | (segments[None, :] == 0)
    allowed = torch.tril(same)
    if kind == "bool":
        return allowed[None, None]
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return additive.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def packed_target_logits(model, examples: Sequence[tuple[Sequence[int], Sequence[int]]], prefix_len: int,
                         model_kwargs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits predicting each target token [N, V], those target ids [N]) of (prompt, target) rows
    whose first `prefix_len` tokens are the same, in packs (`packs`). `prefix_len` must be below
    every prompt's length, so every target is predicted from inside its own suffix."""
    if not packable(model):
        raise ValueError(f"packed layout: attention '{model.config._attn_implementation}' takes no custom mask")
    p = prefix_len
    seqs = [list(prompt) + list(target) for prompt, target in examples]
    if any(len(prompt) <= p for prompt, _ in examples):
        raise ValueError("packed layout: the shared prefix must end before every prompt's last token")
    device = next(model.parameters()).device
    dtype = model.get_input_embeddings().weight.dtype  # the activations' dtype (not a LoRA matrix's)
    kind = PACKABLE_ATTENTION[model.config._attn_implementation]
    preds, labels = [], []
    for rows in packs(p, [len(s) - p for s in seqs], LayerCost.of(model)):
        ids, positions, segments, keep = list(seqs[rows[0]][:p]), list(range(p)), [0] * p, []
        for k, r in enumerate(rows, start=1):
            (prompt, target), start = examples[r], len(ids)  # start: where this row's token p sits
            ids += seqs[r][p:]
            positions += range(p, len(seqs[r]))
            segments += [k] * (len(seqs[r]) - p)
            # seq index j sits at start + j − p; target j is predicted at the position before it
            keep += range(start + len(prompt) - p - 1, start + len(seqs[r]) - p - 1)
            labels += target
        if not keep:
            continue
        segments_t = torch.tensor(segments, device=device)
        out = model(input_ids=torch.tensor([ids], device=device),
                    position_ids=torch.tensor([positions], device=device),
                    attention_mask=_pack_mask(segments_t, kind, dtype), use_cache=False,
                    logits_to_keep=torch.tensor(keep, device=device), **(model_kwargs or {}))
        preds.append(out.logits[0])
    if not preds:
        return torch.empty(0, 0, device=device), torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(preds).float(), torch.tensor(labels, dtype=torch.long, device=device)


def batch_layout(model, examples: Sequence[tuple[Sequence[int], Sequence[int]]], shared_prefix: bool) -> tuple[int, str]:
    """(shared prefix length, layout) of a batch of (prompt, target) rows: the prefix ends before every
    prompt's last token, so each target is predicted from inside its row's own suffix."""
    seqs = [list(p) + list(t) for p, t in examples]
    p = shared_prefix_len(seqs, _suffix_keep(examples)) if shared_prefix else 0
    return p, choose_layout(model, p, [len(s) - p for s in seqs])


def _suffix_keep(examples) -> int:
    """Tokens each row keeps out of the shared prefix: p ≤ min(len) − keep ≤ every prompt length − 1."""
    return min(len(p) + len(t) for p, t in examples) - min(len(p) for p, _ in examples) + 1


def target_logits(model, examples, pad_id: int, shared_prefix: bool, adapter: str | None = None,
                   layout: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(float logits predicting each target token [N, V], those target ids [N]) of a batch.

    `layout` (one of `LAYOUTS`) overrides `choose_layout` (benchmarks, tests)."""
    p, chosen = batch_layout(model, examples, shared_prefix)
    layout = layout or chosen
    if layout == "packed":
        return packed_target_logits(model, examples, p, None if adapter is None else {"adapter_names": [adapter]})
    seqs = [list(p) + list(t) for p, t in examples]
    batch = pack(seqs, pad_id, share_prefix=layout == "two_pass", keep_last=_suffix_keep(examples))
    names = None if adapter is None else [adapter] * len(seqs)
    # only the last positions reach the LM head: those that predict a target token, and the very last
    window = max(len(t) for _, t in examples) + 1
    logits, _, _ = forward_packed(model, batch, adapter_names=names, logits_to_keep=window,
                                  prefix_adapters=None if adapter is None else [adapter])
    labels = torch.full((len(seqs), window), IGNORE, dtype=torch.long)
    for r, (_, t) in enumerate(examples):
        if len(t):
            labels[r, window - len(t):] = torch.as_tensor(list(t), dtype=torch.long)
    labels = labels[:, 1:].to(logits.device)
    keep_pos = labels != IGNORE
    return logits[:, :-1][keep_pos].float(), labels[keep_pos]
