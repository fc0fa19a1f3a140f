"""Evaluation (METHOD.md §7): greedy, batched generation on a task's eval rows, every prediction
saved next to its reference with its ROUGE-L, and the mean with its standard error."""
from __future__ import annotations

import math

from .data import Row
from .generation import Sampling, generate
from .prompts import encode_prompt
from .rouge import rouge_l
from .sampling import subsample


def eval_sample(rows: list[Row], max_rows: int, seed: int) -> list[Row]:
    """A seeded sample, stratified by output for label-like tasks: eval files are sorted by label, so the
    first N rows would all share one answer and let a constant predictor score 100 %."""
    return subsample(rows, max_rows, seed)


def mean_and_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def evaluate_rows(model, tokenizer, rows: list[Row], prompt_format: str, max_prompt_tokens: int,
                  max_new_tokens: int, batch_size: int, share_prefix: bool = True) -> tuple[list[dict], dict]:
    """(per-row predictions with scores, summary {n_rows, rouge_l_mean, rouge_l_se})."""
    prompts = [encode_prompt(tokenizer, r.full_prompt, prompt_format, max_prompt_tokens) for r in rows]
    outs = generate(model, tokenizer, prompts, Sampling(max_new_tokens=max_new_tokens), batch_size,
                    share_prefix=share_prefix, desc="evaluate")
    predictions = []
    for r, o in zip(rows, outs):
        predictions.append({"id": r.id, "input": r.input, "reference": r.output, "prediction": o.text,
                            "rouge_l": rouge_l(o.text, r.output)})
    mean, se = mean_and_se([p["rouge_l"] for p in predictions])
    return predictions, {"n_rows": len(rows), "rouge_l_mean": mean, "rouge_l_se": se}
