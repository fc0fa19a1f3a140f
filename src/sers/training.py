"""One continual-learning stage of LoRA training (METHOD.md §4).

One adapter is carried from stage to stage: stage 1 creates it, every later stage loads the
previous stage's adapter trainable and keeps training it; the base weights stay frozen.

A stage is a `StageSpec` (the model and adapter it starts from, the LoRA shape, the optimiser
`Schedule`), a `DataMix` (the rows, new and replay, and how they are encoded and batched) and a
list of regularisers (`sers.regularisers`): loss per micro-batch = cross-entropy over the target tokens
(mean over the step's target tokens) + each regulariser's term. SERS's is the λ(W)-weighted penalty
λ · (1 − r_b) · ½ Σ_p mean(p²) over the LoRA matrices, r_b = the micro-batch's share of replay rows
(`is_replay`, set by the caller from where a row came from); the baselines (EWC, L2, LwF, O-LoRA) add
theirs, logged per step as `baseline_term`.

Batching (deterministic given `seed`): every epoch the rows are shuffled with a seeded generator
and cut into batches that mix tasks and replay rows as in the reference; inside a batch the rows of
each task instruction run as one forward, so their shared prefix is still computed once (same loss).
With `group_batches` the shuffled rows are cut into chunks of `batch_size * GROUP_BATCHES`
rows, each chunk is sorted by its prompt token ids (rows of one task instruction end up together, so
a batch's rows share a long prefix that `sers.forward.pack` runs once), split into batches, and
the epoch's batches are shuffled again. Grouped batches tend to be all-new or all-replay, so r_b is
mostly 0 or 1: the penalty's expected weight over an epoch is unchanged (λ × the share of new rows),
but it is applied in fewer, fuller doses; the default (`False`) keeps r_b ≈ the replay share in
every batch, as in the reference.
With `shared_prefix` the common prefix of a batch is computed once, in the cheaper of two layouts
(`sers.forward`): two passes (the prefix, then the suffixes against its repeated KV cache,
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .baselines import distillation_kl
from .data import split_instruction
from .errors import SersError
from .forward import batch_layout, resolve_shared_prefix, target_logits
from .io import atomic_path
from .models import LoraShape, load_tokenizer, load_trainable
from .progress import progress
from .regularisers import Baseline, MicroBatch, Regulariser, WassersteinPenalty, lora_parameters

GROUP_BATCHES = 8  # batches per sorted chunk: larger = more prefix sharing, less randomness
# the per-step log line's sums over micro-batches, in the order loss.jsonl writes them
LOG_KEYS = ("loss", "ce", "penalty", "lambda_eff", "replay_fraction", "baseline_term")


@dataclass(frozen=True)
class TrainRow:
    full_prompt: str
    output: str
    is_replay: bool


@dataclass(frozen=True)
class Schedule:
    """The optimiser schedule: AdamW (weight decay 0), cosine with linear warmup, clipped gradients."""

    lr: float = 2e-4
    epochs: float = 3
    batch_size: int = 32
    grad_accum: int = 1              # micro-batches per optimiser step (the step's loss and gradients are one batch's)
    max_grad_norm: float | None = 1.0
    warmup_ratio: float = 0.0


@dataclass(frozen=True)
class DataMix:
    """A stage's rows (new and replay) and how they are encoded and cut into batches."""

    rows: Sequence[TrainRow]
    prompt_format: str = "plain"
    max_prompt_tokens: int = 1024
    max_target_tokens: int = 512
    group_batches: bool = False
    notes: dict = field(default_factory=dict)  # e.g. rehearsal rows left out for an empty label


@dataclass(frozen=True)
class StageSpec:
    """Where a stage starts and how it trains."""

    model_path: str
    prev_adapter: str | None
    lora: LoraShape = LoraShape()
    schedule: Schedule = Schedule()
    shared_prefix: bool | str = "auto"
    gradient_checkpointing: bool = False   # recompute activations in the backward pass: less memory, same loss
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"


def stage_spec(model: dict, training: dict, prev_adapter: str | None, seed: int) -> StageSpec:
    """The spec of a stage from a rule's `model` and `training` config sections."""
    t = training
    return StageSpec(
        model["path"], prev_adapter,
        LoraShape(t["lora_r"], t["lora_alpha"], t["lora_dropout"], t["target_modules"]),
        Schedule(t["lr"], t["epochs"], t["batch_size"], t["grad_accum"], t["max_grad_norm"], t["warmup_ratio"]),
        shared_prefix=t["shared_prefix"], gradient_checkpointing=t["gradient_checkpointing"], seed=seed,
        device=model["device"], dtype=model["dtype"])


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
    (`sers.forward.choose_layout`: two-pass or packed); `layout` forces one (benchmarks, tests).
    """
    total, kl_total, n_tokens = None, None, 0
    for idx in group_rows(groups if groups is not None else [None] * len(examples)):
        part = [examples[i] for i in idx]
        preds, labels = target_logits(model, part, pad_id, shared_prefix, layout=layout)
        if len(labels) == 0:
            continue
        part_sum = F.cross_entropy(preds, labels, reduction="sum")
        total = part_sum if total is None else total + part_sum
        n_tokens += len(labels)
        if teacher is not None:
            was_training = model.training
            model.eval()  # peft's per-row adapter selection refuses training mode; the teacher has no dropout
            with torch.no_grad():
                t_preds, _ = target_logits(model, part, pad_id, shared_prefix, adapter=teacher, layout=layout)
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


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them.

    Activation memory drops from every layer's intermediates to one layer's (plus each layer's input),
    for about one more forward pass of compute per step. Non-reentrant checkpointing: gradients reach
    the LoRA matrices even though the frozen embeddings' output needs none, and the shared prefix's
    cache, read inside a checkpointed layer, gets its gradient too (`sers.forward.forward_packed`).
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


def train_stage(spec: StageSpec, data: DataMix, out_dir: str,
                regularisers: Sequence[Regulariser] | None = None) -> dict:
    """Train one stage and write its adapter folder atomically; return a summary
    {steps, micro_batches, final_loss, final_ce, tokens, tokens_per_s, wall_s, rows, replay_rows}.

    `regularisers` add their terms to the loss in order (SERS's penalty first, as the reference adds it);
    None: the penalty at λ = 0 (a stage that rehearses nothing)."""
    regularisers = list(regularisers) if regularisers is not None else [WassersteinPenalty()]
    _check(spec, data, regularisers)
    t0 = time.time()
    tokenizer = load_tokenizer(spec.model_path)
    loaded = load_trainable(spec.model_path, spec.prev_adapter, spec.lora, seed=spec.seed, device=spec.device,
                            dtype=spec.dtype, stack_blocks=any(r.stacks_blocks for r in regularisers),
                            teacher=next((r.teacher for r in regularisers if r.teacher), None))
    model = loaded.model
    if spec.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    dev = next(model.parameters()).device
    shared_prefix = resolve_shared_prefix(spec.shared_prefix, dev)
    model.train()
    for reg in regularisers:
        reg.setup(lora_parameters(model), loaded.blocks)
    plan = _plan(tokenizer, spec, data)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimiser(params, spec.schedule, len(plan.steps))
    clip = spec.schedule.max_grad_norm if spec.schedule.max_grad_norm and spec.schedule.max_grad_norm > 0 \
        else float("inf")
    layouts = Counter(batch_layout(model, [plan.examples[i] for i in part], shared_prefix)[1]
                      for _, idx in plan.micro for part in plan.forwards(idx))
    settings = _settings(spec, data, regularisers, loaded, plan, shared_prefix, dev, model, layouts)
    step_forward = _StepForward(model, tokenizer.pad_token_id, shared_prefix, plan, regularisers,
                                autocast_bf16=dev.type == "cuda")
    last: dict = {}
    with atomic_path(out_dir, is_dir=True) as tmp:
        with open(tmp / "loss.jsonl", "w", encoding="utf-8") as log:
            for step_no, step in enumerate(progress(plan.steps, desc="train", unit="step"), start=1):
                optimizer.zero_grad(set_to_none=True)
                sums = step_forward.accumulate(step, step_no, len(plan.steps))  # loss.backward() per micro-batch
                reg = _sum_terms(r.step_term(sums) for r in regularisers)
                grad_split = regulariser_gradient_norms(params, reg) if reg is not None and reg.requires_grad else None
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float(clip)))
                if not math.isfinite(grad_norm):
                    raise SersError(f"training: gradient norm is {grad_norm} at optimiser step "
                                    f"{step_no}/{len(plan.steps)} (epoch {step[-1][0]}); lower training.lr")
                current_lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                last = {"step": step_no, "epoch": round(step_forward.done_micro / plan.per_epoch, 4), **sums,
                        "lr": current_lr, "grad_norm": grad_norm}
                if grad_split is not None:
                    last["grad_norm_regulariser"], last["grad_norm_task"] = grad_split
                log.write(json.dumps(last) + "\n")
                log.flush()
        model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=["default"])
        for reg in regularisers:
            reg.save(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model card template: nothing of ours
        wall = time.time() - t0
        n_replay = sum(r.is_replay for r in data.rows)
        summary = {"steps": len(plan.steps), "micro_batches": len(plan.micro), "final_loss": last.get("loss"),
                   "final_ce": last.get("ce"), "tokens": step_forward.tokens,
                   "tokens_per_s": step_forward.tokens / max(wall, 1e-9), "wall_s": wall, "rows": len(data.rows),
                   "replay_rows": n_replay}
        (tmp / "train_config.json").write_text(json.dumps({**settings, "summary": summary}, indent=2) + "\n",
                                               encoding="utf-8")
    return summary


class _StepForward:
    """The forward and backward passes of one optimiser step's micro-batches, and the step's log sums."""

    def __init__(self, model, pad_id: int, shared_prefix: bool, plan: "_Plan", regularisers, autocast_bf16: bool):
        self.model, self.pad_id, self.shared_prefix, self.plan = model, pad_id, shared_prefix, plan
        self.regularisers, self.autocast_bf16 = regularisers, autocast_bf16
        self.distiller = next((r for r in regularisers if r.teacher), None)
        self.done_micro = self.tokens = 0

    def accumulate(self, step: list[tuple[int, list[int]]], step_no: int, n_steps: int) -> dict[str, float]:
        """Backpropagate each micro-batch's loss; micro-batches add up to the step's one batch: the
        cross-entropy (and LwF's KL) is a mean over the step's target tokens, a parameter-only term's weight
        a mean over its rows."""
        ex = self.plan.examples
        sums = dict.fromkeys(LOG_KEYS, 0.0)
        step_tokens = max(1, sum(len(ex[i][1]) for _, idx in step for i in idx))
        step_rows = sum(len(idx) for _, idx in step)
        for epoch, idx in step:
            batch = MicroBatch(row_share=len(idx) / step_rows,
                               token_share=sum(len(ex[i][1]) for i in idx) / step_tokens,
                               replay_fraction=sum(self.plan.replay[i] for i in idx) / len(idx))
            ce, kl = self._cross_entropy(idx)
            batch.kl = None if kl is None else batch.token_share * kl
            loss = batch.token_share * ce
            for reg in self.regularisers:
                term, values = reg.term(self.model, batch)
                if term is not None:
                    loss = loss + term
                for k, v in values.items():
                    sums[k] += v
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SersError(f"training: loss is {value} at optimiser step {step_no}/{n_steps} "
                                f"(epoch {epoch}); lower training.lr or check the data")
            loss.backward()
            self.done_micro += 1
            self.tokens += sum(len(ex[i][0]) + len(ex[i][1]) for i in idx)
            sums["loss"] += value
            sums["ce"] += batch.token_share * float(ce.detach())
            sums["replay_fraction"] += batch.row_share * batch.replay_fraction
        return sums

    def _cross_entropy(self, idx: list[int]):
        """(mean target-token CE of the micro-batch, its mean KL to the teacher or None)."""
        args = (self.model, [self.plan.examples[i] for i in idx], self.pad_id, self.shared_prefix,
                [self.plan.instructions[i] for i in idx])
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast_bf16 else contextlib.nullcontext()
        with amp:
            if self.distiller is not None:
                ce, _, kl = target_cross_entropy(*args, teacher=self.distiller.teacher,
                                                 temperature=self.distiller.temperature)
                return ce, kl
            return target_cross_entropy(*args)[0], None


@dataclass
class _Plan:
    """The stage's encoded rows, its micro-batches and optimiser steps (all fixed before the loop)."""

    examples: list
    replay: list[bool]
    instructions: list[str]   # each row's task instruction: the rows of one share a prefix in a forward
    micro: list[tuple[int, list[int]]]
    steps: list[list[tuple[int, list[int]]]]
    per_epoch: int

    def forwards(self, idx: list[int]) -> list[list[int]]:
        """The rows of a micro-batch as the forwards that run them (one per task instruction)."""
        return [[idx[j] for j in part] for part in group_rows([self.instructions[i] for i in idx])]


def _plan(tokenizer, spec: StageSpec, data: DataMix) -> _Plan:
    from .prompts import encode_example

    s = spec.schedule
    examples = [encode_example(tokenizer, r.full_prompt, r.output, data.prompt_format, data.max_prompt_tokens,
                               data.max_target_tokens) for r in data.rows]
    order_gen = torch.Generator().manual_seed(spec.seed)
    per_epoch = math.ceil(len(data.rows) / s.batch_size)
    total_micro = max(1, math.ceil(s.epochs * per_epoch))
    micro: list[tuple[int, list[int]]] = []
    epoch = 0
    prompts = [p for p, _ in examples]
    while len(micro) < total_micro:
        micro += [(epoch, b) for b in epoch_batches(prompts, s.batch_size, order_gen, data.group_batches)]
        epoch += 1
    micro = micro[:total_micro]
    steps = [micro[i:i + s.grad_accum] for i in range(0, len(micro), s.grad_accum)]
    return _Plan(examples, [bool(r.is_replay) for r in data.rows],
                 [split_instruction(r.full_prompt)[0] for r in data.rows], micro, steps, per_epoch)


def _optimiser(params, schedule: Schedule, total_steps: int):
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=0.0)
    warmup_steps = int(round(schedule.warmup_ratio * total_steps))
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)


def _sum_terms(terms) -> torch.Tensor | None:
    total = None
    for t in terms:
        if t is not None:
            total = t if total is None else total + t
    return total


def _check(spec: StageSpec, data: DataMix, regularisers: Sequence[Regulariser]) -> None:
    s = spec.schedule
    if not data.rows:
        raise SersError("training: no training rows")
    if s.batch_size < 1 or s.grad_accum < 1:
        raise SersError(f"training: batch_size and grad_accum must be ≥ 1 (got {s.batch_size}, {s.grad_accum})")
    if not s.epochs > 0:
        raise SersError(f"training: epochs must be > 0 (got {s.epochs})")
    for reg in regularisers:
        if isinstance(reg, Baseline) and not spec.prev_adapter:
            raise SersError(f"training: the {reg.kind} baseline needs the previous stage's adapter")
    if sum(isinstance(r, Baseline) for r in regularisers) > 1 or sum(bool(r.teacher) for r in regularisers) > 1:
        raise SersError("training: at most one baseline per stage")


def _settings(spec, data, regularisers, loaded, plan, shared_prefix, dev, model, layouts) -> dict:
    """train_config.json: every setting the stage ran with."""
    s, n_replay = spec.schedule, sum(plan.replay)
    reg_settings: dict = {"baseline": None}
    for reg in regularisers:
        reg_settings.update(reg.settings())
    return {
        "model_path": str(spec.model_path), "prev_adapter": str(spec.prev_adapter) if spec.prev_adapter else None,
        **reg_settings,
        "lora_r": spec.lora.r, "lora_alpha": spec.lora.alpha, "lora_dropout": spec.lora.dropout,
        "target_modules_requested": spec.lora.target_modules, "target_modules": loaded.targets,
        **asdict(s), "warmup_steps": int(round(s.warmup_ratio * len(plan.steps))),
        "total_steps": len(plan.steps), "micro_batches": len(plan.micro), "prompt_format": data.prompt_format,
        "max_prompt_tokens": data.max_prompt_tokens, "max_target_tokens": data.max_target_tokens,
        "shared_prefix": shared_prefix, "forward_layouts": dict(sorted(layouts.items())),
        "gradient_checkpointing": spec.gradient_checkpointing, "seed": spec.seed, "device": str(dev),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "autocast_bf16": dev.type == "cuda",
        "optimizer": "AdamW(weight_decay=0)", "schedule": "cosine with warmup", "group_batches": data.group_batches,
        "batching": (f"seeded shuffle per epoch, chunks of batch_size*{GROUP_BATCHES} sorted by prompt, "
                     "batches shuffled") if data.group_batches else "seeded shuffle per epoch",
        "n_rows": len(data.rows), "n_replay_rows": n_replay, "n_new_rows": len(data.rows) - n_replay,
        "data_notes": dict(data.notes),
    }


def estimate_fisher(model_path: str, adapter: str, rows: Sequence[TrainRow], out_path: str, *,
                    prompt_format: str = "plain", max_prompt_tokens: int = 1024, max_target_tokens: int = 512,
                    device: str = "auto", dtype: str = "auto", notes: dict | None = None) -> dict:
    """The diagonal Fisher of `adapter`'s LoRA matrices on `rows` (EWC, as SSR's `sftreg`): batch 1,
    dropout off, F = mean over rows of the squared gradient of the row's mean target-token CE.

    Writes `out_path` (safetensors, keyed like the trainable parameters of a stage that loads this
    adapter) and a json beside it (rows used, settings, Σ F per matrix); returns that json."""
    from safetensors.torch import save_file

    from .baselines import diagonal_fisher
    from .models import load_tokenizer, load_with_adapter
    from .prompts import encode_example

    if not rows:
        raise SersError("training: the Fisher needs at least one row")
    t0 = time.time()
    tokenizer = load_tokenizer(model_path)
    model = load_with_adapter(model_path, adapter, trainable=True, device=device, dtype=dtype)
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
