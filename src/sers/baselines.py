"""Regularisation and architecture baselines of the papers' tables (EWC, L2, LwF, O-LoRA).

The maths of each term (`sers.regularisers` wraps each as a training stage's regulariser). All terms
are sums over the trainable LoRA matrices (the base is frozen).

- `ewc`   (Kirkpatrick et al. 2017, as the SSR code's `sftreg` releases it):
  λ · Σ_p F_p · (p − p*)², p* = the previous stage's adapter, F = the diagonal Fisher of the
  previous task only (per task, not accumulated: SSR's `sftreg` recomputes `fisher.pt` from zeros
  after every stage on that stage's task and the next stage loads only that file), estimated as the
  mean over rows (batch 1, dropout off) of the squared gradient of the row's mean target-token CE.
- `l2`    (SSR's `sftreg`): λ · Σ_p (p − p*)² (no ½; SSR's `reg_p · Σ (p − p*)²`).
- `lwf`   (Li & Hoiem 2016): λ · KL(p_prev^T ‖ p_cur^T) of the next-token distributions at the
  current task's target (response) positions, mean over target tokens, softened by a temperature T
  (no T² factor: Li & Hoiem's λ_o · L_old). The previous model is the same base with the previous
  adapter loaded a second time, frozen (one copy of the base weights).
- `olora` (Wang et al. 2023): a new rank-r LoRA per task, earlier ones frozen and summed in, and
  λ1 · Σ_{j<t} Σ|M_j M_tᵀ| (element-wise, as O-LoRA's src/uie_trainer_lora.py) + λ2 · Σ‖θ_t‖_F over the
  new block's matrices (unsquared, as its code); `form: squared` takes sums of squares of both instead.
  Σ_j B_j A_j is one LoRA of rank r·t
  (A = [A_1; …; A_t] stacked, B = [B_1 … B_t]) and alpha·t keeps the scaling alpha/r, so every stage
  saves a standard peft adapter (the stack) and `olora_blocks.json` with the block boundaries. In
  training the stack is one adapter whose earlier blocks' gradients are zeroed (with AdamW and weight
  decay 0 a parameter whose gradient is always 0 never moves).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F

from .errors import SersError

BASELINES = ("ewc", "l2", "lwf", "olora")
OLORA_MATRICES = ("lora_A", "lora_B")
OLORA_BLOCKS = "olora_blocks.json"
TEACHER = "previous"  # the frozen adapter name LwF loads the previous stage under


def anchored_penalty(params: Iterable[tuple[str, torch.Tensor]], anchor: dict[str, torch.Tensor],
                     weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Σ_p w_p · (p − p*)² over `params` (w = 1 without `weights`): L2 (weights None) and EWC (w = F)."""
    terms = []
    for name, p in params:
        if name not in anchor:
            raise SersError(f"baselines: no anchor for {name}")
        sq = (p.float() - anchor[name].to(p.device, torch.float32)).pow(2)
        if weights is not None:
            if name not in weights:
                raise SersError(f"baselines: the Fisher has no entry for {name}")
            sq = weights[name].to(p.device, torch.float32) * sq
        terms.append(sq.sum())
    if not terms:
        raise SersError("baselines: no trainable LoRA parameters to regularise")
    return torch.stack(terms).sum()


def diagonal_fisher(params: list[tuple[str, torch.Tensor]], row_losses: Iterable[callable]) -> tuple[dict, int]:
    """Mean over rows of the squared gradient of each row's loss, per parameter (the diagonal Fisher).

    `row_losses` yields one zero-argument callable per row returning that row's scalar loss (SSR:
    batch 1, the row's mean target-token CE). Returns ({name: F}, number of rows).
    """
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
    n_rows = 0
    for loss_fn in row_losses:
        for _, p in params:
            p.grad = None
        loss_fn().backward()
        for n, p in params:
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().pow(2)
        n_rows += 1
    if n_rows == 0:
        raise SersError("baselines: the Fisher needs at least one row")
    for _, p in params:
        p.grad = None
    return {n: f / n_rows for n, f in fisher.items()}, n_rows


def distillation_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Σ over positions of KL(softmax(z_teacher/T) ‖ softmax(z_student/T)); logits are [N, V]."""
    if temperature <= 0:
        raise SersError(f"baselines: temperature must be > 0 (got {temperature})")
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum()


OLORA_FORMS = ("reference", "squared")


def orthogonality(previous: torch.Tensor, new: torch.Tensor, form: str = "reference") -> torch.Tensor:
    """previous = the earlier blocks stacked (rows), new = this task's block; with previous =
    [M_1; …; M_{t−1}] a sum over the stacked product is the sum over its blocks, Σ_{j<t}.

    reference: Σ|previous · newᵀ| element-wise (O-LoRA's code: torch.abs(torch.mm(A, A_newᵀ)).sum());
    squared: ‖previous · newᵀ‖²_F."""
    if previous.shape[-1] != new.shape[-1]:
        raise SersError(f"baselines: orthogonality of {tuple(previous.shape)} and {tuple(new.shape)}")
    product = previous.float() @ new.float().T
    return product.abs().sum() if form == "reference" else product.pow(2).sum()


# ---- O-LoRA: the stack of per-task blocks as one peft adapter ----

def read_blocks(adapter_dir: str | Path, rank: int) -> list[list[int]]:
    """The [start, end) rank blocks of a saved stack; an adapter without the file is one block."""
    path = Path(adapter_dir) / OLORA_BLOCKS
    if path.is_file():
        blocks = json.loads(path.read_text(encoding="utf-8"))["blocks"]
    else:
        blocks = [[0, rank]]
    if blocks[-1][1] != rank or any(b[0] != a[1] for a, b in zip(blocks, blocks[1:])) or blocks[0][0] != 0:
        raise SersError(f"baselines: {path}: blocks {blocks} do not tile the adapter's rank {rank}")
    return blocks


def stack_state(blocks_state: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One LoRA state dict from per-block state dicts (same keys): lora_A rows stacked, lora_B columns."""
    out = {}
    for key in blocks_state[0]:
        parts = [s[key] for s in blocks_state]
        if "lora_A" in key:
            out[key] = torch.cat(parts, dim=0)
        elif "lora_B" in key:
            out[key] = torch.cat(parts, dim=1)
        else:
            raise SersError(f"baselines: cannot stack {key} (only lora_A / lora_B)")
    return out


def olora_split(name: str, p: torch.Tensor, frozen_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(earlier blocks, this task's block) of a stacked lora_A ([rank, d_in], rows) or lora_B (columns).

    Both are returned as [rows, d] with the rank along the rows, so `orthogonality` applies to either."""
    if "lora_A" in name:
        return p[:frozen_rank], p[frozen_rank:]
    return p[:, :frozen_rank].T, p[:, frozen_rank:].T


def olora_terms(params: list[tuple[str, torch.Tensor]], frozen_rank: int, matrix: str = "lora_A",
                form: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    """(orthogonality of `matrix`'s earlier blocks and this task's, summed over modules; the size of this
    task's A and B blocks: Σ‖θ_t‖_F per matrix for form reference, as O-LoRA's code, Σ‖θ_t‖² for squared)."""
    if matrix not in OLORA_MATRICES:
        raise SersError(f"baselines: olora.orthogonal_matrix {matrix!r} is not one of {OLORA_MATRICES}")
    if form not in OLORA_FORMS:
        raise SersError(f"baselines: olora.form {form!r} is not one of {OLORA_FORMS}")
    orth, norm = [], []
    for name, p in params:
        prev, new = olora_split(name, p, frozen_rank)
        norm.append(new.float().norm() if form == "reference" else new.float().pow(2).sum())
        if frozen_rank and matrix in name:
            orth.append(orthogonality(prev, new, form))
    zero = torch.zeros((), device=params[0][1].device)
    return (torch.stack(orth).sum() if orth else zero), torch.stack(norm).sum()


def freeze_earlier_blocks(params: list[tuple[str, torch.Tensor]], frozen_rank: int) -> list:
    """Zero the gradient of the earlier blocks (hooks; returns their handles)."""
    handles = []
    for name, p in params:
        mask = torch.ones_like(p)
        if "lora_A" in name:
            mask[:frozen_rank] = 0
        else:
            mask[:, :frozen_rank] = 0
        handles.append(p.register_hook(lambda g, m=mask: g * m))
    return handles


def write_blocks(adapter_dir: str | Path, blocks: list[list[int]], rank_per_block: int) -> None:
    (Path(adapter_dir) / OLORA_BLOCKS).write_text(
        json.dumps({"rank_per_block": rank_per_block, "blocks": blocks,
                    "note": "O-LoRA: block i = task i's LoRA (rows of lora_A, columns of lora_B); "
                            "lora_alpha = alpha · blocks, so alpha / r per block is kept"}, indent=2) + "\n",
        encoding="utf-8")
