"""Task similarity before a training stage (METHOD.md §4) and the penalty strength it sets.

With θ(t−1), every row is embedded as the attention-masked mean of the second-to-last hidden
layer (over its prompt, or over its whole training sequence as in the reference — the caller passes
the token ids); the new-task and replay embeddings are projected onto random orthonormal directions,
*then* each projected vector is L2-normalised (as the reference does; normalising the hidden states
before projecting would shrink W by about √(H/32)), and the sets are compared per direction by a
quantile approximation of the Wasserstein-1 distance.
The mean over directions (a sliced W1) sets λ = λmin + (λmax − λmin)(1 − exp(−W/τ)): less similar
tasks get a stronger constraint. τ is applied (the released code dropped it).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .errors import SersError
from .prompts import encode_example, encode_prompt

POOLINGS = ("prompt", "sequence")


def pooled_ids(tokenizer, full_prompt: str, output: str, prompt_format: str, pooling: str,
               max_prompt_tokens: int = 1024, max_target_tokens: int = 512) -> list[int]:
    """The token ids a row's hidden states are averaged over: its prompt, or (`sequence`, the reference)
    its whole training sequence — prompt, response and EOS."""
    if pooling == "prompt":
        return encode_prompt(tokenizer, full_prompt, prompt_format, max_prompt_tokens)
    if pooling == "sequence":
        prompt, target = encode_example(tokenizer, full_prompt, output, prompt_format, max_prompt_tokens,
                                        max_target_tokens)
        return prompt + target
    raise SersError(f"similarity.pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")


@torch.no_grad()
def pooled_hidden_states(model, tokenizer, prompts: Sequence[Sequence[int]], batch_size: int = 8) -> np.ndarray:
    """[N, H] float32: attention-masked token mean of `hidden_states[-2]` for every prompt (input order).

    Rows are batched by length with left padding; position ids come from the attention mask, so a
    row's vector does not depend on the rows it is batched with.
    """
    if not prompts:
        raise SersError("similarity: no prompts to embed")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise SersError(f"similarity: prompt {i} is empty")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out: list[np.ndarray | None] = [None] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                n = len(prompts[i])
                ids[r, width - n:] = torch.as_tensor(list(prompts[i]), dtype=torch.long)
                mask[r, width - n:] = 1
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            res = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                        use_cache=False)
            hidden = res.hidden_states[-2].float()  # [B, T, H]
            m = mask[..., None].to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            for r, i in enumerate(idx):
                out[i] = pooled[r].cpu().numpy()
    finally:
        model.train(was_training)
    return np.stack(out).astype(np.float32)  # type: ignore[arg-type]


def quantile_levels(n_quantiles: int = 20) -> np.ndarray:
    return np.linspace(0.05, 0.95, n_quantiles)


def quantile_w1(a, b, n_quantiles: int = 20) -> float:
    """Mean |q_a − q_b| over `n_quantiles` levels evenly spaced in [0.05, 0.95] (1-D samples)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise SersError("similarity: quantile_w1 needs two non-empty samples")
    levels = quantile_levels(n_quantiles)
    return float(np.mean(np.abs(np.quantile(a, levels) - np.quantile(b, levels))))


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def random_directions(dim: int, n_projections: int = 32, seed: int = 0) -> np.ndarray:
    """[dim, min(dim, n_projections)] orthonormal columns: QR of a seeded Gaussian matrix."""
    k = min(dim, n_projections)
    gauss = np.random.default_rng(seed).standard_normal((dim, k))
    q, _ = np.linalg.qr(gauss)
    return q[:, :k]


def sliced_w1(x, y, n_projections: int = 32, n_quantiles: int = 20, seed: int = 0) -> float:
    """Sliced W1 between two embedding sets [N, H] and [M, H].

    Rows are projected onto random orthonormal directions, each projected vector is L2-normalised,
    the sets are compared per direction with `quantile_w1`, and the distances are averaged.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise SersError(f"similarity: embeddings must be [N, H] and [M, H], got {x.shape} and {y.shape}")
    if len(x) == 0 or len(y) == 0:
        raise SersError("similarity: sliced_w1 needs two non-empty embedding sets")
    dirs = random_directions(x.shape[1], n_projections, seed)
    px, py = _l2_normalise(x @ dirs), _l2_normalise(y @ dirs)
    return float(np.mean([quantile_w1(px[:, j], py[:, j], n_quantiles) for j in range(dirs.shape[1])]))


def similarity_lambda(W: float, lambda_min: float = 0.15, lambda_max: float = 0.6, tau: float = 0.08) -> float:
    """λ = λmin + (λmax − λmin)(1 − exp(−W/τ)), clipped to [λmin, λmax]."""
    if not tau > 0:
        raise SersError(f"similarity: tau must be > 0, got {tau}")
    if lambda_max < lambda_min:
        raise SersError(f"similarity: lambda_max ({lambda_max}) < lambda_min ({lambda_min})")
    lam = lambda_min + (lambda_max - lambda_min) * (1.0 - math.exp(-float(W) / tau))
    return float(min(max(lam, lambda_min), lambda_max))


def _draw(items: Sequence, k: int, rng: np.random.Generator) -> list:
    if len(items) <= k:
        return list(items)
    idx = np.sort(rng.choice(len(items), size=k, replace=False))
    return [items[i] for i in idx]


def task_similarity(model, tokenizer, new_prompts: Sequence[Sequence[int]], replay_prompts: Sequence[Sequence[int]],
                    max_rows: int = 500, n_projections: int = 32, n_quantiles: int = 20, lambda_min: float = 0.15,
                    lambda_max: float = 0.6, tau: float = 0.08, seed: int = 0, batch_size: int = 8) -> dict:
    """W (sliced W1 between new-task and replay embeddings under `model`) and the λ it sets.

    `new_prompts` / `replay_prompts` are the token ids each row is pooled over (prompts, or whole
    training sequences). Up to `max_rows` of each set are drawn with a RNG seeded by `seed`
    (input order kept).
    """
    if not new_prompts:
        raise SersError("similarity: no new-task prompts")
    if not replay_prompts:
        raise SersError("similarity: no replay prompts")
    rng = np.random.default_rng(seed)
    new = _draw(list(new_prompts), max_rows, rng)
    replay = _draw(list(replay_prompts), max_rows, rng)
    emb_new = pooled_hidden_states(model, tokenizer, new, batch_size=batch_size)
    emb_replay = pooled_hidden_states(model, tokenizer, replay, batch_size=batch_size)
    W = sliced_w1(emb_new, emb_replay, n_projections=n_projections, n_quantiles=n_quantiles, seed=seed)
    return {
        "W": W,
        "lambda": similarity_lambda(W, lambda_min, lambda_max, tau),
        "n_new": len(new),
        "n_replay": len(replay),
        "tau": tau,
        "lambda_min": lambda_min,
        "lambda_max": lambda_max,
        "n_projections": min(n_projections, emb_new.shape[1]),
        "n_quantiles": n_quantiles,
        "seed": seed,
    }
