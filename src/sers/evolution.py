"""Label self-evolution (METHOD.md §5): θt labels a task's selected pseudo inputs; the hardest
`se_ratio` of them are re-decoded greedily from the blend p = α·p_θ0 + (1 − α)·p_θt.

θ0 is θt with its adapter switched off, so one copy of the base weights serves both; the blend runs
both in one forward pass (see `sers.generation`). Hardness, by default, is how far θt's label
drifted from θ0's greedy label: 1 − ROUGE-L(θt, θ0)/100.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .generation import Blend, Generated, Sampling, generate
from .prompts import encode_prompt
from .rehearsal import has_label
from .rouge import rouge_l
from .sampling import MAX_LABELS

HARDNESS = ("base_disagreement", "logprob", "released")


@dataclass(frozen=True)
class EvolutionSettings:
    se_ratio: float = 0.2
    se_alpha: float = 0.5
    hardness: str = "base_disagreement"
    blend: str = "probability"
    max_new_tokens: int = 128
    batch_size: int = 8


def hardness_scores(kind: str, tuned: list[Generated], base: list[Generated] | None,
                    existing_labels: list[str]) -> list[float]:
    """Higher = harder. `released` reproduces the released code: ROUGE-L against the row's
    existing label, which is empty at that point, so every score ties and file order decides."""
    if kind == "base_disagreement":
        return [1 - rouge_l(t.text, b.text) / 100 for t, b in zip(tuned, base)]
    if kind == "logprob":
        return [-t.mean_logprob for t in tuned]
    if kind == "released":
        return [1 - rouge_l(t.text, ref) / 100 for t, ref in zip(tuned, existing_labels)]
    raise ValueError(f"unknown hardness {kind!r}; choose from {HARDNESS}")


def hardest(scores: list[float], ratio: float) -> list[int]:
    """Indices of the round(ratio·N) hardest rows; ties keep file order."""
    n = int(round(ratio * len(scores)))
    return sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:n])


def label_rows(model, tokenizer, rows: list[dict], settings: EvolutionSettings, prompt_format: str,
               max_prompt_tokens: int = 1024, share_prefix: bool = True, adapter: str = "default") -> list[dict]:
    """Labelled rehearsal rows for one task (input, label, how the label was made)."""
    greedy = Sampling(max_new_tokens=settings.max_new_tokens)
    prompts = [encode_prompt(tokenizer, r["full_prompt"], prompt_format, max_prompt_tokens) for r in rows]
    tuned = generate(model, tokenizer, prompts, greedy, settings.batch_size, share_prefix=share_prefix,
                     desc="label with θt")
    chosen: list[int] = []
    scores: list[float | None] = [None] * len(rows)
    base: list[Generated] | None = None
    blended: dict[int, Generated] = {}
    if settings.se_ratio > 0 and rows:
        if settings.hardness == "base_disagreement":
            with model.disable_adapter():
                base = generate(model, tokenizer, prompts, greedy, settings.batch_size, share_prefix=share_prefix,
                                desc="label with θ0")
        scores = hardness_scores(settings.hardness, tuned, base, [str(r.get("output", "")) for r in rows])
        chosen = hardest(scores, settings.se_ratio)
        outs = generate(model, tokenizer, [prompts[i] for i in chosen], greedy, settings.batch_size,
                        blend=Blend(settings.se_alpha, settings.blend, adapter), share_prefix=share_prefix,
                        desc="re-decode hardest with the blend")
        blended = dict(zip(chosen, outs))
    labelled = []
    for i, row in enumerate(rows):
        evolved = i in blended
        out = blended[i] if evolved else tuned[i]
        labelled.append({
            "id": row["id"], "task": row.get("task"), "input": row["input"], "full_prompt": row["full_prompt"],
            "output": out.text, "evolved": evolved, "hardness": scores[i], "theta_t_label": tuned[i].text,
            "theta0_label": base[i].text if base is not None else None,
            "label_source": f"blend(alpha={settings.se_alpha},{settings.blend})" if evolved else "theta_t",
            "provenance": row.get("provenance"),
        })
    return labelled


def rehearsal_summary(labelled: list[dict]) -> dict:
    """Counts of a labelled rehearsal set: rows, evolved rows, rows with an empty label (training leaves
    them out), and how often each label occurs when the labels form a small set (classification tasks)."""
    labels = Counter(str(r.get("output", "")).strip() for r in labelled if has_label(r))
    empty = [str(r.get("id")) for r in labelled if not has_label(r)]
    return {
        "n_rows": len(labelled),
        "n_evolved": sum(bool(r.get("evolved")) for r in labelled),
        "n_empty_label": len(empty),
        "empty_label_ids": empty,
        "label_counts": dict(labels.most_common()) if len(labels) <= MAX_LABELS else None,
        "n_distinct_labels": len(labels),
    }


def probe_against_references(model, tokenizer, rows: list[dict], settings: EvolutionSettings, prompt_format: str,
                             max_prompt_tokens: int = 1024, share_prefix: bool = True) -> dict:
    """Does self-evolution move labels toward the truth? Label real rows the stage never trained on
    exactly as `label_rows` labels pseudo inputs (their real outputs hidden from it), then score θt's
    greedy label and the label kept against the real output (ROUGE-L). Returns the counts (rows, evolved,
    changed: evolved with a label other than θt's), mean scores on all rows and on the changed rows, the
    paired mean difference (kept − θt) over the changed rows, and every row."""
    hidden = [{k: v for k, v in r.items() if k != "output"} for r in rows]
    labelled = label_rows(model, tokenizer, hidden, settings, prompt_format, max_prompt_tokens, share_prefix)
    details = []
    for row, lab in zip(rows, labelled):
        details.append({"id": row["id"], "reference": row["output"], "theta_t_label": lab["theta_t_label"],
                        "label": lab["output"], "theta0_label": lab["theta0_label"], "evolved": lab["evolved"],
                        "changed": lab["evolved"] and lab["output"] != lab["theta_t_label"],
                        "rouge_theta_t": rouge_l(lab["theta_t_label"], row["output"]),
                        "rouge_label": rouge_l(lab["output"], row["output"])})
    changed = [d for d in details if d["changed"]]

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "n_rows": len(details), "n_evolved": sum(d["evolved"] for d in details), "n_changed": len(changed),
        "rouge_theta_t_all": mean([d["rouge_theta_t"] for d in details]),
        "rouge_label_all": mean([d["rouge_label"] for d in details]),
        "rouge_theta_t_changed": mean([d["rouge_theta_t"] for d in changed]),
        "rouge_label_changed": mean([d["rouge_label"] for d in changed]),
        "diff_changed": mean([d["rouge_label"] - d["rouge_theta_t"] for d in changed]),
        "n_closer": sum(d["rouge_label"] > d["rouge_theta_t"] for d in changed),
        "n_farther": sum(d["rouge_label"] < d["rouge_theta_t"] for d in changed),
        "rows": details,
    }
