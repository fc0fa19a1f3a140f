"""One continual-learning stage of LoRA training (METHOD.md §4).

One adapter is carried from stage to stage: stage 1 creates it, every later stage loads the
previous stage's adapter trainable and keeps training it; the base weights stay frozen.

Loss per micro-batch = cross-entropy over the target tokens (mean over the batch's target tokens)
+ λ · (1 − r_b) · ½ Σ_p mean(p²) over the LoRA matrices, r_b = fraction of replay rows in the
micro-batch (the reference). Research variants: anchor the penalty at the previous stage's adapter
(p − p_{t−1}) and/or sum each matrix instead of averaging it, with λ multiplied by a user scale.
`is_replay` is set by the caller from where a row came from. The regularisation / architecture
baselines (EWC, L2, LwF, O-LoRA: `sers.baselines`) add their own term through `baseline`, logged
per step as `baseline_term`.

Batching (deterministic given `seed`): every epoch the rows are shuffled with a seeded generator
and cut into batches that mix tasks and replay rows as in the reference; inside a batch the rows of
each task instruction run as one forward, so their shared prefix is still computed once (same loss).
With `group_batches` the shuffled rows are cut into chunks of `batch_size * GROUP_BATCHES`
rows, each chunk is sorted by its prompt token ids (rows of one task instruction end up together, so
a batch's rows share a long prefix that `sers.generation.pack` runs once), split into batches, and
the epoch's batches are shuffled again. Grouped batches tend to be all-new or all-replay, so r_b is
mostly 0 or 1: the penalty's expected weight over an epoch is unchanged (λ × the share of new rows),
but it is applied in fewer, fuller doses; the default (`False`) keeps r_b ≈ the replay share in
every batch, as in the reference.
With `shared_prefix` the common prefix of a batch is computed once, in the cheaper of two layouts
(`sers.prefix_packing`): two passes (the prefix, then the suffixes against its repeated KV cache,
gradients flowing through that cache) or one packed sequence [prefix][suffix 1]…[suffix R] under a
block mask. Either way the loss and gradients equal an unshared batch.

The stage's folder is built in a temporary sibling and renamed into place only when complete
(`sers.io.atomic_path`): adapter_model.safetensors, adapter_config.json, train_config.json,
loss.jsonl. A killed or failed stage leaves no folder a later run would trust.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .baselines import (
    BASELINES,
    TEACHER,
    anchored_penalty,
    distillation_kl,
    freeze_earlier_blocks,
    load_olora_model,
    olora_terms,
    write_blocks,
)
from .data import split_instruction
from .errors import SersError
from .generation import forward_packed, pack, resolve_shared_prefix, shared_prefix_len
from .io import atomic_path
from .prefix_packing import choose_layout, packed_target_logits
from .progress import progress

GROUP_BATCHES = 8  # batches per sorted chunk: larger = more prefix sharing, less randomness
IGNORE = -100


@dataclass(frozen=True)
class TrainRow:
    full_prompt: str
    output: str
    is_replay: bool


def lora_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable LoRA matrices (lora_A / lora_B weights)."""
    return [(n, p) for n, p in model.named_parameters()
            if p.requires_grad and ("lora_A" in n or "lora_B" in n)]


PENALTY_ANCHORS = ("zero", "previous")
PENALTY_REDUCTIONS = ("mean", "sum")


def lora_l2_penalty(model, anchor: dict[str, torch.Tensor] | None = None, reduction: str = "mean") -> torch.Tensor:
    """½ Σ_p reduce((p − p*)²) over the trainable LoRA matrices (a scalar tensor; 0 if there are none).

    p* = 0 (the reference: ½ Σ_p mean(p²)), or `anchor[name]` — the previous stage's adapter, as in the
    SSR code's L2 baseline. `reduction` "mean" averages each matrix (the reference; its gradient per
    element is p/numel), "sum" adds its elements up.
    """
    if reduction not in PENALTY_REDUCTIONS:
        raise SersError(f"training: penalty reduction {reduction!r} is not one of {PENALTY_REDUCTIONS}")
    terms = []
    for name, p in lora_parameters(model):
        diff = p.float() if anchor is None else p.float() - anchor[name].to(p.device, torch.float32)
        sq = diff.pow(2)
        terms.append(sq.mean() if reduction == "mean" else sq.sum())
    if not terms:
        return torch.zeros((), device=next(model.parameters()).device)
    return 0.5 * torch.stack(terms).sum()


def penalty_applies(lam: float, only_above_min: bool = False, lambda_min: float = 0.0) -> bool:
    """The released code applies the penalty only when λ > λmin (`only_above_min=True`)."""
    return lam > lambda_min if only_above_min else True


def penalty_coefficient(lam: float, replay_fraction: float, only_above_min: bool = False,
                        lambda_min: float = 0.0) -> float:
    """λ · (1 − r_b), or 0 where the penalty does not apply."""
    return lam * (1.0 - replay_fraction) if penalty_applies(lam, only_above_min, lambda_min) else 0.0


def penalised_loss(ce, penalty, lam: float, replay_fraction: float, only_above_min: bool = False,
                   lambda_min: float = 0.0, scale: float = 1.0):
    """ce + scale · λ · (1 − r_b) · penalty (`only_above_min`: only when λ > λmin)."""
    if not penalty_applies(lam, only_above_min, lambda_min):
        return ce
    return ce + scale * lam * (1.0 - replay_fraction) * penalty


def target_cross_entropy(model, examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                         shared_prefix: bool, groups: Sequence[object] | None = None,
                         teacher: str | None = None, temperature: float = 1.0, layout: str | None = None):
    """(mean cross-entropy over all target tokens of the batch, number of target tokens).

    `examples` are (prompt ids, target ids). With `groups` (e.g. each row's task instruction) the
    batch runs as one forward per group, so each group's shared prefix is computed once even in a
    batch that mixes tasks; the per-token losses are summed over groups and divided by the batch's
    target-token count, which is exactly the loss (and gradient) of the mixed batch.

    With `teacher` (the name of a frozen second adapter, LwF) the return is (ce, n_tokens, kl): kl =
    the mean over the same target tokens of KL(teacher ‖ model) at temperature `temperature`.

    With `shared_prefix` each group runs in the cheaper layout that computes its shared prefix once
    (`sers.prefix_packing.choose_layout`: two-pass or packed); `layout` forces one (benchmarks, tests).
    """
    total, kl_total, n_tokens = None, None, 0
    for idx in group_rows(groups if groups is not None else [None] * len(examples)):
        part = [examples[i] for i in idx]
        preds, labels = _target_logits(model, part, pad_id, shared_prefix, layout=layout)
        if len(labels) == 0:
            continue
        part_sum = F.cross_entropy(preds, labels, reduction="sum")
        total = part_sum if total is None else total + part_sum
        n_tokens += len(labels)
        if teacher is not None:
            was_training = model.training
            model.eval()  # peft's per-row adapter selection refuses training mode; the teacher has no dropout
            with torch.no_grad():
                t_preds, _ = _target_logits(model, part, pad_id, shared_prefix, adapter=teacher, layout=layout)
            model.train(was_training)
            part_kl = distillation_kl(t_preds, preds, temperature)
            kl_total = part_kl if kl_total is None else kl_total + part_kl
    if n_tokens == 0:
        raise SersError("training: a batch has no target tokens")
    if teacher is not None:
        return total / n_tokens, n_tokens, kl_total / n_tokens
    return total / n_tokens, n_tokens


def group_rows(keys: Sequence[object]) -> list[list[int]]:
    """Row indices grouped by key (e.g. each row's task instruction), groups in order of first appearance."""
    members: dict[object, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    return list(members.values())


def batch_layout(model, examples: Sequence[tuple[Sequence[int], Sequence[int]]], shared_prefix: bool) -> tuple[int, str]:
    """(shared prefix length, layout) of a batch of (prompt, target) rows: the prefix ends before every
    prompt's last token, so each target is predicted from inside its row's own suffix."""
    seqs = [list(p) + list(t) for p, t in examples]
    p = shared_prefix_len(seqs, _suffix_keep(examples)) if shared_prefix else 0
    return p, choose_layout(model, p, [len(s) - p for s in seqs])


def _suffix_keep(examples) -> int:
    """Tokens each row keeps out of the shared prefix: p ≤ min(len) − keep ≤ every prompt length − 1."""
    return min(len(p) + len(t) for p, t in examples) - min(len(p) for p, _ in examples) + 1


def _target_logits(model, examples, pad_id: int, shared_prefix: bool, adapter: str | None = None,
                   layout: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(float logits predicting each target token [N, V], those target ids [N]) of a batch.

    `layout` (one of `sers.prefix_packing.LAYOUTS`) overrides `choose_layout` (benchmarks, tests)."""
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


def epoch_batches(prompts: Sequence[Sequence[int]], batch_size: int, generator: torch.Generator,
                  group: bool = True) -> list[list[int]]:
    """One epoch's batches (row indices): shuffle; with `group`, sort chunks by prompt, split, shuffle batches."""
    n = len(prompts)
    perm = torch.randperm(n, generator=generator).tolist()
    if not group:
        return [perm[b:b + batch_size] for b in range(0, n, batch_size)]
    chunk = batch_size * GROUP_BATCHES
    batches: list[list[int]] = []
    for c in range(0, n, chunk):
        idx = sorted(perm[c:c + chunk], key=lambda i: (tuple(prompts[i]), i))
        batches += [idx[b:b + batch_size] for b in range(0, len(idx), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def load_lora_model(model_path: str, prev_adapter: str | None, *, lora_r: int, lora_alpha: float,
                    lora_dropout: float, target_modules, seed: int, device: str = "auto", dtype: str = "auto"):
    """The base model with a trainable LoRA adapter: `prev_adapter` loaded trainable, or a fresh one."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from .models import load_model, lora_target_modules

    base = load_model(model_path, device=device, dtype=dtype)
    targets = lora_target_modules(base, target_modules)
    torch.manual_seed(seed)
    if prev_adapter:
        if not (Path(prev_adapter) / "adapter_config.json").is_file():
            raise SersError(f"training: previous adapter {prev_adapter} has no adapter_config.json")
        model = PeftModel.from_pretrained(base, prev_adapter, is_trainable=True)
        cfg = model.peft_config["default"]
        saved = (cfg.r, float(cfg.lora_alpha), sorted(cfg.target_modules))
        wanted = (lora_r, float(lora_alpha), sorted(targets))
        if saved != wanted:
            raise SersError(f"training: previous adapter {prev_adapter} has (r, alpha, target_modules) = {saved},"
                            f" the config asks for {wanted}; one adapter is carried across stages")
    else:
        config = LoraConfig(task_type="CAUSAL_LM", r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            target_modules=targets)
        model = get_peft_model(base, config)
    return model, targets


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them.

    Activation memory drops from every layer's intermediates to one layer's (plus each layer's input),
    for about one more forward pass of compute per step. Non-reentrant checkpointing: gradients reach
    the LoRA matrices even though the frozen embeddings' output needs none, and the shared prefix's
    cache, read inside a checkpointed layer, gets its gradient too (`sers.generation.forward_packed`).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise SersError(f"training.gradient_checkpointing: {type(base).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5: the old name is a deprecated alias
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)  # also input grads
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        base.enable_input_require_grads()


def _load_fisher(path: str, names: list[str]) -> dict[str, torch.Tensor]:
    """The previous stage's diagonal Fisher (`fisher` rule), keyed like the trainable LoRA parameters."""
    from safetensors.torch import load_file

    fisher = load_file(str(path))
    if set(fisher) != set(names):
        missing, extra = sorted(set(names) - set(fisher)), sorted(set(fisher) - set(names))
        raise SersError(f"training: the Fisher {path} does not match the adapter (missing {missing[:3]}, "
                        f"unexpected {extra[:3]})")
    return fisher


PARAMETER_TERMS = ("ewc", "l2", "olora")  # baselines whose term depends on the parameters alone (not LwF's KL)


def _baseline_term(kind, baseline, params, reference, fisher, kl, frozen_rank):
    """The baseline's regularisation term of one micro-batch (None without a baseline)."""
    if kind == "ewc":
        return baseline["lambda"] * anchored_penalty(params, reference, fisher)
    if kind == "l2":
        return baseline["lambda"] * anchored_penalty(params, reference)
    if kind == "lwf":
        return baseline["lambda"] * kl
    if kind == "olora":
        orth, norm = olora_terms(params, frozen_rank, baseline["orthogonal_matrix"], baseline.get("form", "reference"))
        return baseline["lambda1"] * orth + baseline["lambda2"] * norm
    return None


def regulariser_gradient_norms(params: Sequence[torch.Tensor], term: torch.Tensor) -> tuple[float, float]:
    """(‖∇ term‖, ‖g − ∇ term‖) for the gradients `params` hold after backward, before clipping: how hard a
    parameter-only regulariser (the λ-weighted penalty, EWC, L2, O-LoRA) pulls against the task loss's
    gradient. Reads the gradients; changes nothing."""
    grads = torch.autograd.grad(term, params, allow_unused=True)
    reg_sq = task_sq = 0.0
    for p, g_reg in zip(params, grads):
        total = p.grad.float() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
        g_reg = torch.zeros_like(total) if g_reg is None else g_reg.float()
        reg_sq += float(g_reg.pow(2).sum())
        task_sq += float((total - g_reg).pow(2).sum())
    return math.sqrt(reg_sq), math.sqrt(task_sq)


def _finite(x: float) -> bool:
    return math.isfinite(x)


def train_stage(model_path: str, out_dir: str, rows: Sequence[TrainRow], *, prev_adapter: str | None,
                lam: float, lambda_min: float, only_above_min: bool, lora_r: int = 8, lora_alpha: float = 32,
                lora_dropout: float = 0.1, target_modules="auto", lr: float = 2e-4, epochs: float = 3,
                batch_size: int = 32, grad_accum: int = 1, max_grad_norm: float | None = 1.0,
                warmup_ratio: float = 0.0, prompt_format: str = "plain", max_prompt_tokens: int = 1024,
                max_target_tokens: int = 512, shared_prefix: bool | str = "auto", seed: int = 0, device: str = "auto",
                dtype: str = "auto", group_batches: bool = False, data_notes: dict | None = None,
                penalty_anchor: str = "zero", penalty_reduction: str = "mean", penalty_scale: float = 1.0,
                baseline: dict | None = None, gradient_checkpointing: bool = False) -> dict:
    """Train one stage and write its adapter folder atomically; return a summary
    {steps, micro_batches, final_loss, final_ce, tokens, tokens_per_s, wall_s, rows, replay_rows}.

    `data_notes` (e.g. rehearsal rows left out for an empty label) are written to train_config.json.
    The penalty is scale · λ · (1 − r_b) · ½ Σ_p reduce((p − p*)²), p* = 0 or (`penalty_anchor="previous"`)
    the adapter this stage starts from (see `lora_l2_penalty`).

    `baseline` adds a regularisation baseline's term (`sers.baselines`): {"kind": "ewc", "lambda",
    "fisher": path}, {"kind": "l2", "lambda"}, {"kind": "lwf", "lambda", "temperature"} or
    {"kind": "olora", "lambda1", "lambda2", "orthogonal_matrix"}; each needs `prev_adapter`.

    `gradient_checkpointing` recomputes activations in the backward pass (`enable_gradient_checkpointing`):
    less memory, the same loss and gradients. So does `grad_accum`: an optimiser step of `grad_accum`
    micro-batches of `batch_size` rows has the loss and gradients of one batch of all its rows (the
    cross-entropy a mean over the step's target tokens, λ·(1 − r_b) over its rows)."""
    from transformers import get_cosine_schedule_with_warmup

    from .models import load_tokenizer
    from .prompts import encode_example

    if not rows:
        raise SersError("training: no training rows")
    if batch_size < 1 or grad_accum < 1:
        raise SersError(f"training: batch_size and grad_accum must be ≥ 1 (got {batch_size}, {grad_accum})")
    if not epochs > 0:
        raise SersError(f"training: epochs must be > 0 (got {epochs})")
    kind = (baseline or {}).get("kind")
    if kind is not None and kind not in BASELINES:
        raise SersError(f"training: baseline {kind!r} is not one of {BASELINES}")
    if kind is not None and not prev_adapter:
        raise SersError(f"training: the {kind} baseline needs the previous stage's adapter")
    t0 = time.time()
    tokenizer = load_tokenizer(model_path)
    pad_id = tokenizer.pad_token_id
    lora_kwargs = dict(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                       seed=seed, device=device, dtype=dtype)
    blocks = None
    if kind == "olora":  # the previous stack plus a fresh block, one adapter of rank r·t
        model, targets, blocks = load_olora_model(model_path, prev_adapter, **lora_kwargs)
    else:
        model, targets = load_lora_model(model_path, prev_adapter, **lora_kwargs)
    if kind == "lwf":  # the previous model: the same base with the previous adapter, frozen
        model.load_adapter(prev_adapter, adapter_name=TEACHER, is_trainable=False)
        model.set_adapter("default")
        for name, p in model.named_parameters():
            if f".{TEACHER}." in name:
                p.requires_grad_(False)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    dev = next(model.parameters()).device
    shared_prefix = resolve_shared_prefix(shared_prefix, dev)
    model.train()
    if penalty_anchor not in PENALTY_ANCHORS:
        raise SersError(f"training: penalty anchor {penalty_anchor!r} is not one of {PENALTY_ANCHORS}")
    anchor = ({n: p.detach().clone() for n, p in lora_parameters(model)} if penalty_anchor == "previous"
              else None)
    trainable_lora = lora_parameters(model)
    reference = {n: p.detach().clone() for n, p in trainable_lora} if kind in ("ewc", "l2") else None
    fisher = _load_fisher(baseline["fisher"], [n for n, _ in trainable_lora]) if kind == "ewc" else None
    frozen_rank = blocks[-1][0] if blocks else 0
    if kind == "olora":
        freeze_earlier_blocks(trainable_lora, frozen_rank)

    examples = [encode_example(tokenizer, r.full_prompt, r.output, prompt_format, max_prompt_tokens,
                               max_target_tokens) for r in rows]
    replay = [bool(r.is_replay) for r in rows]

    # the whole stage's micro-batches, then optimiser steps of `grad_accum` micro-batches each
    order_gen = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(rows) / batch_size)
    total_micro = max(1, math.ceil(epochs * per_epoch))
    micro: list[tuple[int, list[int]]] = []
    epoch = 0
    prompts = [p for p, _ in examples]
    instructions = [split_instruction(r.full_prompt)[0] for r in rows]  # prefix-sharing groups in a batch
    while len(micro) < total_micro:
        micro += [(epoch, b) for b in epoch_batches(prompts, batch_size, order_gen, group_batches)]
        epoch += 1
    micro = micro[:total_micro]
    steps = [micro[i:i + grad_accum] for i in range(0, len(micro), grad_accum)]
    # the layout each forward (one per task instruction in a micro-batch) runs in, for train_config.json
    layouts = Counter(batch_layout(model, [examples[idx[j]] for j in part], shared_prefix)[1]
                      for _, idx in micro for part in group_rows([instructions[i] for i in idx]))
    total_steps = len(steps)
    warmup_steps = int(round(warmup_ratio * total_steps))

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    clip = float(max_grad_norm) if max_grad_norm and max_grad_norm > 0 else float("inf")
    use_bf16 = dev.type == "cuda"

    settings = {
        "model_path": str(model_path), "prev_adapter": str(prev_adapter) if prev_adapter else None,
        "lam": lam, "lambda_min": lambda_min, "only_above_min": only_above_min,
        "penalty_applies": penalty_applies(lam, only_above_min, lambda_min),
        "penalty": {"anchor": penalty_anchor, "reduction": penalty_reduction, "scale": penalty_scale},
        "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "target_modules_requested": target_modules, "target_modules": targets,
        "lr": lr, "epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum,
        "max_grad_norm": max_grad_norm, "warmup_ratio": warmup_ratio, "warmup_steps": warmup_steps,
        "total_steps": total_steps, "micro_batches": len(micro), "prompt_format": prompt_format,
        "max_prompt_tokens": max_prompt_tokens, "max_target_tokens": max_target_tokens,
        "shared_prefix": shared_prefix, "forward_layouts": dict(sorted(layouts.items())),
        "gradient_checkpointing": gradient_checkpointing, "seed": seed,
        "device": str(dev),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "autocast_bf16": use_bf16,
        "optimizer": "AdamW(weight_decay=0)", "schedule": "cosine with warmup",
        "group_batches": group_batches,
        "batching": (f"seeded shuffle per epoch, chunks of batch_size*{GROUP_BATCHES} sorted by prompt, "
                     "batches shuffled") if group_batches else "seeded shuffle per epoch",
        "n_rows": len(rows), "n_replay_rows": sum(replay), "n_new_rows": len(rows) - sum(replay),
        "data_notes": data_notes or {},
        "baseline": {**baseline, **({"blocks": blocks} if blocks else {})} if baseline else None,
    }

    tokens = 0
    done_micro = 0
    last: dict = {}
    with atomic_path(out_dir, is_dir=True) as tmp:
        with open(tmp / "loss.jsonl", "w", encoding="utf-8") as log:
            for step_no, group in enumerate(progress(steps, desc="train", unit="step"), start=1):
                optimizer.zero_grad(set_to_none=True)
                sums = {"loss": 0.0, "ce": 0.0, "penalty": 0.0, "lambda_eff": 0.0, "replay_fraction": 0.0,
                        "baseline_term": 0.0}
                # micro-batches add up to the step's one batch: the cross-entropy (and LwF's KL) is a mean
                # over the step's target tokens, the penalty's weight λ·(1 − r_b) a mean over its rows
                step_tokens = max(1, sum(len(examples[i][1]) for _, idx in group for i in idx))
                step_rows = sum(len(idx) for _, idx in group)
                for ep, idx in group:
                    token_share = sum(len(examples[i][1]) for i in idx) / step_tokens
                    row_share = len(idx) / step_rows
                    r_b = sum(replay[i] for i in idx) / len(idx)
                    coeff = penalty_scale * penalty_coefficient(lam, r_b, only_above_min, lambda_min)
                    amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
                    kl = None
                    with amp:
                        batch_args = (model, [examples[i] for i in idx], pad_id, shared_prefix,
                                      [instructions[i] for i in idx])
                        if kind == "lwf":
                            ce, _, kl = target_cross_entropy(*batch_args, teacher=TEACHER,
                                                             temperature=baseline["temperature"])
                        else:
                            ce, _ = target_cross_entropy(*batch_args)
                    penalty = lora_l2_penalty(model, anchor, penalty_reduction)
                    loss = penalised_loss(token_share * ce, row_share * penalty, lam, r_b, only_above_min,
                                          lambda_min, penalty_scale)
                    extra = _baseline_term(kind, baseline, trainable_lora, reference, fisher,
                                           None if kl is None else token_share * kl, frozen_rank)
                    if extra is not None and kl is None:  # a term of the parameters alone: a row share
                        extra = row_share * extra
                    if extra is not None:
                        loss = loss + extra
                    value = float(loss.detach())
                    if not _finite(value):
                        raise SersError(f"training: loss is {value} at optimiser step {step_no}/{total_steps} "
                                        f"(epoch {ep}); lower training.lr or check the data")
                    loss.backward()
                    done_micro += 1
                    tokens += sum(len(examples[i][0]) + len(examples[i][1]) for i in idx)
                    for k, v in (("loss", value), ("ce", token_share * float(ce.detach())),
                                 ("penalty", row_share * float(penalty.detach())),
                                 ("lambda_eff", row_share * coeff), ("replay_fraction", row_share * r_b),
                                 ("baseline_term", 0.0 if extra is None else float(extra.detach()))):
                        sums[k] += v
                # the step's parameter-only regularisers (θ is fixed within a step, and the row shares sum to
                # 1): λ_eff · penalty(θ) + the baseline's term; their gradient against the task loss's
                reg = sums["lambda_eff"] * lora_l2_penalty(model, anchor, penalty_reduction) \
                    if sums["lambda_eff"] > 0 else None
                if kind in PARAMETER_TERMS:
                    term = _baseline_term(kind, baseline, trainable_lora, reference, fisher, None, frozen_rank)
                    reg = term if reg is None else reg + term
                grad_split = regulariser_gradient_norms(params, reg) if reg is not None and reg.requires_grad else None
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
                if not _finite(grad_norm):
                    raise SersError(f"training: gradient norm is {grad_norm} at optimiser step "
                                    f"{step_no}/{total_steps} (epoch {group[-1][0]}); lower training.lr")
                current_lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                last = {"step": step_no, "epoch": round(done_micro / per_epoch, 4), **sums, "lr": current_lr,
                        "grad_norm": grad_norm}
                if grad_split is not None:
                    last["grad_norm_regulariser"], last["grad_norm_task"] = grad_split
                log.write(json.dumps(last) + "\n")
                log.flush()
        model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=["default"])
        if blocks:
            write_blocks(tmp, blocks, lora_r)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model card template: nothing of ours
        wall = time.time() - t0
        summary = {"steps": total_steps, "micro_batches": len(micro), "final_loss": last.get("loss"),
                   "final_ce": last.get("ce"), "tokens": tokens, "tokens_per_s": tokens / max(wall, 1e-9),
                   "wall_s": wall, "rows": len(rows), "replay_rows": sum(replay)}
        (tmp / "train_config.json").write_text(json.dumps({**settings, "summary": summary}, indent=2) + "\n",
                                               encoding="utf-8")
    return summary


def estimate_fisher(model_path: str, adapter: str, rows: Sequence[TrainRow], out_path: str, *,
                    prompt_format: str = "plain", max_prompt_tokens: int = 1024, max_target_tokens: int = 512,
                    device: str = "auto", dtype: str = "auto", notes: dict | None = None) -> dict:
    """The diagonal Fisher of `adapter`'s LoRA matrices on `rows` (EWC, as SSR's `sftreg`): batch 1,
    dropout off, F = mean over rows of the squared gradient of the row's mean target-token CE.

    Writes `out_path` (safetensors, keyed like the trainable parameters of a stage that loads this
    adapter) and a json beside it (rows used, settings, Σ F per matrix); returns that json."""
    from peft import PeftModel
    from safetensors.torch import save_file

    from .baselines import diagonal_fisher
    from .models import load_model, load_tokenizer
    from .prompts import encode_example

    if not rows:
        raise SersError("training: the Fisher needs at least one row")
    t0 = time.time()
    tokenizer = load_tokenizer(model_path)
    model = PeftModel.from_pretrained(load_model(model_path, device=device, dtype=dtype), adapter, is_trainable=True)
    model.eval()
    params = lora_parameters(model)
    examples = [encode_example(tokenizer, r.full_prompt, r.output, prompt_format, max_prompt_tokens,
                               max_target_tokens) for r in rows]
    pad_id = tokenizer.pad_token_id
    fisher, n_rows = diagonal_fisher(
        params, (lambda ex=ex: target_cross_entropy(model, [ex], pad_id, False)[0] for ex in examples))
    summary = {"adapter": str(adapter), "n_rows": n_rows, "estimator": "mean over rows (batch 1, dropout off) of "
               "the squared gradient of the row's mean target-token cross-entropy", "prompt_format": prompt_format,
               "max_prompt_tokens": max_prompt_tokens, "max_target_tokens": max_target_tokens,
               "n_matrices": len(fisher), "sum": float(sum(f.sum() for f in fisher.values())),
               "max": float(max(f.max() for f in fisher.values())), "wall_s": time.time() - t0, **(notes or {})}
    with atomic_path(out_path) as tmp:
        save_file({n: f.contiguous().cpu() for n, f in fisher.items()}, str(tmp))
    with atomic_path(str(Path(out_path).with_suffix(".json"))) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
