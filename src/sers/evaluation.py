"""Evaluation (METHOD.md §7): greedy, batched generation on each task's eval rows, every prediction
saved next to its reference with its ROUGE-L, and the mean with its standard error.

Two steps, so one model load serves every task a model is evaluated on: `predict_rows` generates (GPU,
one job per model), `score_rows` scores one task's generations against its references (CPU, cheap).
Each generation carries a digest of the prompt it answered (`prompt_digest`), so scoring can tell a
generation made for other eval rows from a current one instead of pairing them silently.
"""
from __future__ import annotations

import hashlib
import math

from .data import Row
from .errors import SersError
from .rouge import scorer
from .sampling import subsample


def eval_sample(rows: list[Row], max_rows: int, seed: int) -> list[Row]:
    """A seeded sample, stratified by output for label-like tasks: eval files are sorted by label, so the
    first N rows would all share one answer and let a constant predictor score 100 %."""
    return subsample(rows, max_rows, seed)


def prompt_digest(row: Row) -> str:
    """What a generation depends on from its row: the id and the prompt (not the reference)."""
    return hashlib.sha256(f"{row.id}\0{row.full_prompt}".encode("utf-8")).hexdigest()[:16]


def sample_digest(rows: list[Row]) -> str:
    """One digest of a task's sampled eval prompts: it changes when, and only when, the generations would."""
    return hashlib.sha256("\n".join(prompt_digest(r) for r in rows).encode("ascii")).hexdigest()[:16]


def mean_and_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def predict_rows(model, tokenizer, rows: list[Row], prompt_format: str, max_prompt_tokens: int,
                 max_new_tokens: int, batch_size: int, share_prefix: bool = True) -> list[dict]:
    """Greedy generations [{id, prompt_digest, prediction}] of one task's eval rows, in row order.

    `batch_size` is the batch on a CPU; on CUDA the batch is as large as the free memory holds
    (`sers.generation.fit_batch_size`, logged)."""
    from .generation import Sampling, fit_batch_size, generate
    from .prompts import encode_prompt

    prompts = [encode_prompt(tokenizer, r.full_prompt, prompt_format, max_prompt_tokens) for r in rows]
    if prompts:
        batch_size = fit_batch_size(model, max(map(len, prompts)), max_new_tokens, batch_size)
    outs = generate(model, tokenizer, prompts, Sampling(max_new_tokens=max_new_tokens), batch_size,
                    share_prefix=share_prefix, desc="evaluate")
    return [{"id": r.id, "prompt_digest": prompt_digest(r), "prediction": o.text} for r, o in zip(rows, outs)]


def score_rows(rows: list[Row], generations: list[dict], where: str = "generations",
               rouge: str = "unicode") -> tuple[list[dict], dict]:
    """(per-row predictions with ROUGE-L, summary {n_rows, rouge_l_mean, rouge_l_se}) of one task, by the
    ROUGE-L scorer `rouge` names (config `eval.rouge`, see sers.rouge.scorer).

    `generations` must answer exactly `rows` (same ids, same prompts); anything else is an error that
    names `where`, since pairing a prediction with another row's reference would corrupt every metric."""
    score = scorer(rouge)
    by_id = {g["id"]: g for g in generations}
    if len(by_id) != len(generations) or set(by_id) != {r.id for r in rows}:
        missing = sorted({r.id for r in rows} - set(by_id))[:3]
        extra = sorted(set(by_id) - {r.id for r in rows})[:3]
        raise SersError(f"{where}: the generations do not answer this task's eval rows (missing {missing}, "
                        f"extra {extra}); rerun the model's `evaluate` job (snakemake -R evaluate)")
    predictions = []
    for r in rows:
        g = by_id[r.id]
        if g["prompt_digest"] != prompt_digest(r):
            raise SersError(f"{where}: row {r.id!r} was generated for another prompt than the eval file's; "
                            "rerun the model's `evaluate` job (snakemake -R evaluate)")
        predictions.append({"id": r.id, "input": r.input, "reference": r.output, "prediction": g["prediction"],
                            "rouge_l": score(g["prediction"], r.output)})
    mean, se = mean_and_se([p["rouge_l"] for p in predictions])
    return predictions, {"n_rows": len(rows), "rouge_l_mean": mean, "rouge_l_se": se}

