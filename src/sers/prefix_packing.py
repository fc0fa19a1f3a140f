"""The teacher-forced forward of a batch whose rows share a prefix, as one packed sequence.

The two-pass layout (`sers.generation.forward_packed`) runs the shared prefix once, then every row's
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

from dataclasses import dataclass
from typing import Sequence

import torch

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
