"""A tiny random LLaMA shared by the training, similarity and generation tests (built once per run)."""
from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "ni-c012-sample"
TASKS = ("sa", "qa", "sum", "trans")

_BUILT: dict[str, Path] = {}
# train_stage settings small enough for a unit test on the tiny model (one epoch, rank 4, fp32 on CPU)
FAST_TRAINING = dict(lora_r=4, lora_alpha=16, lora_dropout=0.0, target_modules="auto", lr=1e-2, epochs=1,
                     batch_size=4, grad_accum=1, max_grad_norm=1.0, warmup_ratio=0.0, prompt_format="plain",
                     max_prompt_tokens=64, max_target_tokens=16, shared_prefix=True, seed=0, device="cpu",
                     dtype="float32")


def sample_rows(task: str = "sa"):
    from sers.data import read_rows

    return read_rows(DATA / f"{task}.train.smp001.json")


def build_tiny(tmp_path_factory) -> Path:
    """Build the tiny model once per test process (the cache survives across test modules)."""
    if "dir" not in _BUILT:
        from sers.models import build_tiny_model

        texts = [r.full_prompt + "\n\nOutput: " + r.output for t in TASKS for r in sample_rows(t)]
        out = tmp_path_factory.mktemp("tiny") / "model"
        _BUILT["dir"] = build_tiny_model(texts, out, hidden_size=64, layers=2, heads=4, vocab_size=1024, seed=0)
    return _BUILT["dir"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory)


@pytest.fixture(scope="module", name="tok")
def tiny_tokenizer(tiny_model_dir):
    from sers.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module", name="model")
def lively_model(tiny_model_dir):
    """The tiny model with varied greedy continuations (`liven`), in eval mode."""
    from sers.models import load_model

    return liven(load_model(str(tiny_model_dir), device="cpu")).eval()


@pytest.fixture(scope="module", name="lora_model")
def lively_lora_model(tiny_model_dir):
    """θt = the lively base + a LoRA adapter with random weights (so θt ≠ θ0)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from sers.models import load_model

    base = liven(load_model(str(tiny_model_dir), device="cpu"))
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
    return randomise_lora(peft_model, std=0.4).eval()


def liven(model, std: float = 0.2, seed: int = 1):
    """Re-draw the transformer blocks' matrices with a larger std, in place.

    The freshly initialised tiny model (std 0.02, tied embeddings) just repeats the last prompt token;
    larger block weights make its greedy continuations varied, so token-for-token tests mean something.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name and p.dim() == 2 and "lora_" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def randomise_lora(model, std: float = 0.3, seed: int = 2):
    """Give every LoRA matrix random weights (a fresh adapter has lora_B = 0, i.e. θt = θ0)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def task_prompts(tokenizer, task: str = "sa", n: int = 4, lengths: list[int] | None = None) -> list[list[int]]:
    """Encoded prompts of one task (they share the task instruction), optionally cut to `lengths`."""
    from sers.prompts import encode_prompt

    prompts = [encode_prompt(tokenizer, r.full_prompt, "plain") for r in sample_rows(task)[:n]]
    if lengths:
        prompts = [p[:k] for p, k in zip(prompts, lengths)]
    return prompts


def run_stage(model_dir, out, rows, *, prev_adapter=None, lam: float = 0.0, lambda_min: float = 0.0,
              only_above_min: bool = False, penalty_anchor: str = "zero", penalty_reduction: str = "mean",
              penalty_scale: float = 1.0, baseline: dict | None = None, group_batches: bool = False, **settings):
    """`sers.training.train_stage` from flat settings (FAST_TRAINING's keys, as the config names them)."""
    from sers.models import LoraShape
    from sers.regularisers import WassersteinPenalty, baseline_from_config
    from sers.training import DataMix, Schedule, StageSpec, train_stage

    s = {**FAST_TRAINING, **settings}
    spec = StageSpec(str(model_dir), None if prev_adapter is None else str(prev_adapter),
                     LoraShape(s["lora_r"], s["lora_alpha"], s["lora_dropout"], s["target_modules"]),
                     Schedule(s["lr"], s["epochs"], s["batch_size"], s["grad_accum"], s["max_grad_norm"],
                              s["warmup_ratio"]),
                     shared_prefix=s["shared_prefix"], gradient_checkpointing=s.get("gradient_checkpointing", False),
                     seed=s["seed"], device=s["device"], dtype=s["dtype"])
    data = DataMix(rows, s["prompt_format"], s["max_prompt_tokens"], s["max_target_tokens"], group_batches)
    regularisers = [WassersteinPenalty(lam, lambda_min, only_above_min, penalty_anchor, penalty_reduction,
                                       penalty_scale)]
    if baseline:
        regularisers.append(baseline_from_config(baseline))
    return train_stage(spec, data, str(out), regularisers)
