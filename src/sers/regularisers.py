"""The terms a training stage adds to its cross-entropy (METHOD.md §4 and the papers' baselines):
one interface, one class per method.

A regulariser is set up once before the loop (`setup`: what it keeps of the starting adapter), adds a
term to every micro-batch's loss (`term`), gives the optimiser step's whole term at the current
parameters for the gradient log (`step_term`, parameter-only terms), and writes what the next stage
needs beside the adapter (`save`). What it needs loaded into the model it declares (`teacher`,
`stacks_blocks`); `sers.models.load_trainable` loads it. Adding a method is one class here plus one
entry in `BASELINES`.

- `WassersteinPenalty` (SERS): scale · λ · (1 − r_b) · ½ Σ_p reduce((p − p*)²) over the LoRA matrices,
  λ from the Wasserstein distance of the task embeddings (`sers.similarity`), r_b the micro-batch's
  share of replay rows (the reference). Every stage has one; λ = 0 where nothing is rehearsed.
- `EWC`, `L2`, `LwF`, `OLoRA`: the baselines, maths in `sers.baselines`.

Micro-batches add up to one optimiser step: a parameter-only term is weighted by the micro-batch's
share of the step's rows, a term over target tokens (LwF's KL) by its share of the step's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from .baselines import (
    OLORA_FORMS,
    OLORA_MATRICES,
    TEACHER,
    anchored_penalty,
    freeze_earlier_blocks,
    olora_terms,
    write_blocks,
)
from .errors import SersError

PENALTY_ANCHORS = ("zero", "previous")
PENALTY_REDUCTIONS = ("mean", "sum")

Params = list[tuple[str, torch.nn.Parameter]]


@dataclass
class MicroBatch:
    """What a term needs to know of the micro-batch it is added to."""

    row_share: float        # its rows / the optimiser step's rows
    token_share: float      # its target tokens / the step's target tokens
    replay_fraction: float  # r_b: its share of replay rows
    kl: torch.Tensor | None = None  # token_share · KL(teacher ‖ model) where a regulariser has a teacher


class Regulariser:
    """Set up before the loop, a loss term per micro-batch, state saved after the stage."""

    teacher: ClassVar[str | None] = None  # a frozen adapter the loss's forward also runs (its KL reaches `term`)
    stacks_blocks: ClassVar[bool] = False  # the model is the previous stack plus a new block (O-LoRA)

    def setup(self, trainable: Params, blocks: list[list[int]] | None) -> None:
        """Called once, after loading, with the trainable LoRA matrices (and O-LoRA's block list)."""

    def term(self, model, batch: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        """(this micro-batch's term or None, the values it adds to the step's log line)."""
        raise NotImplementedError

    def step_term(self, step_log: dict[str, float]) -> torch.Tensor | None:
        """The optimiser step's whole term at the current parameters, for the gradient log (None: not a
        term of the parameters alone, or zero)."""
        return None

    def settings(self) -> dict:
        """What train_config.json records of it."""
        raise NotImplementedError

    def save(self, out_dir: Path) -> None:
        """Write what a later stage needs beside the adapter."""


# ---- SERS: the λ(W)-weighted L2 penalty ----

def lora_parameters(model) -> Params:
    """The trainable LoRA matrices (lora_A / lora_B weights)."""
    return [(n, p) for n, p in model.named_parameters()
            if p.requires_grad and ("lora_A" in n or "lora_B" in n)]


def lora_l2_penalty(model, anchor: dict[str, torch.Tensor] | None = None, reduction: str = "mean") -> torch.Tensor:
    """½ Σ_p reduce((p − p*)²) over the model's trainable LoRA matrices (a scalar tensor; 0 if there are none).

    p* = 0 (the reference: ½ Σ_p mean(p²)), or `anchor[name]` — the previous stage's adapter, as in the
    SSR code's L2 baseline. `reduction` "mean" averages each matrix (the reference; its gradient per
    element is p/numel), "sum" adds its elements up.
    """
    return l2_penalty(lora_parameters(model), anchor, reduction,
                      device=next(model.parameters()).device)


def l2_penalty(params: Params, anchor: dict[str, torch.Tensor] | None = None, reduction: str = "mean",
               device: torch.device | str = "cpu") -> torch.Tensor:
    """`lora_l2_penalty` over given (name, parameter) pairs; 0 on `device` if there are none."""
    if reduction not in PENALTY_REDUCTIONS:
        raise SersError(f"training: penalty reduction {reduction!r} is not one of {PENALTY_REDUCTIONS}")
    terms = []
    for name, p in params:
        diff = p.float() if anchor is None else p.float() - anchor[name].to(p.device, torch.float32)
        sq = diff.pow(2)
        terms.append(sq.mean() if reduction == "mean" else sq.sum())
    if not terms:
        return torch.zeros((), device=device)
    return 0.5 * torch.stack(terms).sum()


@dataclass
class WassersteinPenalty(Regulariser):
    """scale · λ · (1 − r_b) · ½ Σ_p reduce((p − p*)²); the released code applies it only when λ > λmin
    (`only_above_min`). p* = 0 (`anchor` "zero", the reference) or the adapter the stage starts from."""

    lam: float = 0.0
    lambda_min: float = 0.0
    only_above_min: bool = False
    anchor: str = "zero"
    reduction: str = "mean"
    scale: float = 1.0
    _anchor: dict | None = field(default=None, init=False, repr=False)
    _params: Params = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if self.anchor not in PENALTY_ANCHORS:
            raise SersError(f"training: penalty anchor {self.anchor!r} is not one of {PENALTY_ANCHORS}")
        if self.reduction not in PENALTY_REDUCTIONS:
            raise SersError(f"training: penalty reduction {self.reduction!r} is not one of {PENALTY_REDUCTIONS}")

    @property
    def applies(self) -> bool:
        return self.lam > self.lambda_min if self.only_above_min else True

    def weight(self, replay_fraction: float) -> float:
        """scale · λ · (1 − r_b), or 0 where the penalty does not apply."""
        return self.scale * self.lam * (1.0 - replay_fraction) if self.applies else 0.0

    def setup(self, trainable, blocks):
        self._params = trainable
        self._anchor = {n: p.detach().clone() for n, p in trainable} if self.anchor == "previous" else None

    def penalty(self) -> torch.Tensor:
        """½ Σ_p reduce((p − p*)²) over the trainable LoRA matrices `setup` was given."""
        return l2_penalty(self._params, self._anchor, self.reduction)

    def term(self, model, batch):
        penalty = self.penalty()
        weight = self.weight(batch.replay_fraction)
        log = {"penalty": batch.row_share * float(penalty.detach()), "lambda_eff": batch.row_share * weight}
        return (weight * (batch.row_share * penalty) if self.applies else None), log

    def step_term(self, step_log):
        if not step_log["lambda_eff"] > 0:
            return None
        return step_log["lambda_eff"] * self.penalty()

    def settings(self):
        return {"lam": self.lam, "lambda_min": self.lambda_min, "only_above_min": self.only_above_min,
                "penalty_applies": self.applies,
                "penalty": {"anchor": self.anchor, "reduction": self.reduction, "scale": self.scale}}


# ---- the baselines ----

class Baseline(Regulariser):
    """A baseline's term, logged as `baseline_term`; `settings` records its config section."""

    kind: ClassVar[str]
    config_keys: ClassVar[tuple[str, ...]]  # its section's keys that reach training (others: other rules')
    config: dict

    def settings(self):
        return {"baseline": {"kind": self.kind, **self.config}}

    def parameter_term(self) -> torch.Tensor:
        raise NotImplementedError

    def term(self, model, batch):
        value = batch.row_share * self.parameter_term()
        return value, {"baseline_term": float(value.detach())}

    def step_term(self, step_log):
        return self.parameter_term()


@dataclass
class L2(Baseline):
    """λ · Σ_p (p − p*)², p* = the previous stage's adapter (SSR's `sftreg`, no ½)."""

    kind: ClassVar[str] = "l2"
    config_keys: ClassVar[tuple[str, ...]] = ("lambda",)
    config: dict
    _params: Params = field(default_factory=list, init=False, repr=False)
    _reference: dict = field(default_factory=dict, init=False, repr=False)

    def setup(self, trainable, blocks):
        self._params = trainable
        self._reference = {n: p.detach().clone() for n, p in trainable}

    def parameter_term(self):
        return self.config["lambda"] * anchored_penalty(self._params, self._reference)


@dataclass
class EWC(L2):
    """λ · Σ_p F_p · (p − p*)², F = the previous task's diagonal Fisher (the `fisher` rule's file)."""

    kind: ClassVar[str] = "ewc"
    config_keys: ClassVar[tuple[str, ...]] = ("lambda", "fisher")
    _fisher: dict = field(default_factory=dict, init=False, repr=False)

    def setup(self, trainable, blocks):
        super().setup(trainable, blocks)
        self._fisher = load_fisher(self.config["fisher"], [n for n, _ in trainable])

    def parameter_term(self):
        return self.config["lambda"] * anchored_penalty(self._params, self._reference, self._fisher)


@dataclass
class LwF(Baseline):
    """λ · KL(previous model ‖ this one) at the target tokens, temperature T (Li & Hoiem)."""

    kind: ClassVar[str] = "lwf"
    config_keys: ClassVar[tuple[str, ...]] = ("lambda", "temperature")
    teacher: ClassVar[str] = TEACHER
    config: dict

    @property
    def temperature(self) -> float:
        return self.config["temperature"]

    def term(self, model, batch):
        value = self.config["lambda"] * batch.kl
        return value, {"baseline_term": float(value.detach())}

    def step_term(self, step_log):
        return None  # the KL depends on the batch, not on the parameters alone


@dataclass
class OLoRA(Baseline):
    """λ1 · Σ_{j<t} orthogonality(M_j, M_t) + λ2 · size(θ_t) over a stack of per-task blocks."""

    kind: ClassVar[str] = "olora"
    config_keys: ClassVar[tuple[str, ...]] = ("lambda1", "lambda2", "orthogonal_matrix", "form")
    stacks_blocks: ClassVar[bool] = True
    config: dict
    _params: Params = field(default_factory=list, init=False, repr=False)
    _blocks: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if self.config.get("orthogonal_matrix", "lora_A") not in OLORA_MATRICES:
            raise SersError(f"baselines.olora.orthogonal_matrix: {self.config['orthogonal_matrix']!r} is not one "
                            f"of {OLORA_MATRICES}")
        if self.config.get("form", "reference") not in OLORA_FORMS:
            raise SersError(f"baselines.olora.form: {self.config['form']!r} is not one of {OLORA_FORMS}")

    def setup(self, trainable, blocks):
        self._params, self._blocks = trainable, blocks
        freeze_earlier_blocks(trainable, self.frozen_rank)

    @property
    def frozen_rank(self) -> int:
        return self._blocks[-1][0]

    def parameter_term(self):
        orth, norm = olora_terms(self._params, self.frozen_rank, self.config["orthogonal_matrix"],
                                 self.config.get("form", "reference"))
        return self.config["lambda1"] * orth + self.config["lambda2"] * norm

    def settings(self):
        return {"baseline": {"kind": self.kind, **self.config, "blocks": self._blocks}}

    def save(self, out_dir):
        start, end = self._blocks[-1]
        write_blocks(out_dir, self._blocks, end - start)


BASELINES: dict[str, type[Baseline]] = {cls.kind: cls for cls in (EWC, L2, LwF, OLoRA)}


def baseline_from_config(section: dict) -> Baseline:
    """The baseline named by `section["kind"]`, with the keys of its config section that training uses
    (e.g. EWC's `fisher_rows` is the `fisher` rule's)."""
    kind = section.get("kind")
    if kind not in BASELINES:
        raise SersError(f"training: baseline {kind!r} is not one of {tuple(BASELINES)}")
    cls = BASELINES[kind]
    return cls({k: section[k] for k in cls.config_keys if k in section})


def load_fisher(path: str, names: list[str]) -> dict[str, torch.Tensor]:
    """The previous stage's diagonal Fisher (`fisher` rule), keyed like the trainable LoRA parameters."""
    from safetensors.torch import load_file

    fisher = load_file(str(path))
    if set(fisher) != set(names):
        missing, extra = sorted(set(names) - set(fisher)), sorted(set(fisher) - set(names))
        raise SersError(f"training: the Fisher {path} does not match the adapter (missing {missing[:3]}, "
                        f"unexpected {extra[:3]})")
    return fisher


def stage_regularisers(lam: float, similarity: dict, penalty: dict | None = None,
                       baseline: dict | None = None) -> list[Regulariser]:
    """A stage's regularisers from its config: SERS's penalty at `lam` (λ of this stage's W; 0 where
    nothing is rehearsed), shaped by `penalty` ({anchor, reduction, scale}, default the reference's),
    then the method's baseline section if it has one."""
    penalty = penalty or {}
    regs: list[Regulariser] = [WassersteinPenalty(
        lam, similarity["lambda_min"], similarity["only_above_min"], penalty.get("anchor", "zero"),
        penalty.get("reduction", "mean"), penalty.get("scale", 1.0))]
    if baseline:
        regs.append(baseline_from_config(baseline))
    return regs
