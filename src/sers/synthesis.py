"""Pseudo-input synthesis with the base model θ0 (METHOD.md §1 and §6).

Three modes, all batched through `sers.generation`:

- `prompt`: the reference's one-shot masked-infill prompt (`get_mask_prompt_template` of the SERS
  code: seed e masked → e, then seed s masked → "Output:"; no task instruction in it); the text after
  the last "Output:" is the new input. `infill_prompt: instructed` is this project's own wording,
  which names the task instruction.
- `span`: template-constrained span infilling for small models that answer the infill prompt with
  chat. Every unmasked word stays in place; θ0 fills each blank from the instruction plus the text
  to its left, a few words at a time. Several candidates are sampled per blank and the one under
  which the next kept words are most likely wins; a blank takes about as many words as it replaced.
- `icl`: SSR's 2-shot in-context synthesis of input *and* output over ordered seed pairs; every
  "Input: … Output: …" segment of a continuation is a raw row (SSR's parser keeps every pair).

Every raw row keeps its provenance (seed id, example id, mask ratio, prompt or masked text).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .data import Row
from .generation import Sampling, continuation_logprobs, generate
from .masking import Blank, Masked, contextual_mask, split_core
from .prompts import encode_plain
from .sampling import has_small_label_set, subsample

# The reference's infill prompt, character for character (blank lines and the indented line included).
REFERENCE_INFILL_TEMPLATE = (
    "Replace `____` in the context while keeping them logically consistent. Only replace `____` in the "
    "sentence. Do NOT modify other parts.\n\n"
    "Here is an example:\n\n"
    "Input: \n{example_masked}\n\n"
    "Output: \n{example_original}\n"
    "            \n"
    "Now, process the following input:\n\n"
    "Input: \n{seed_masked}\n\n"
    "Output: \n"
)
# This project's wording: the same one-shot infill, preceded by the task instruction.
INSTRUCTED_INFILL_TEMPLATE = (
    "{instruction}\n\n"
    "Fill in every ____ blank of the masked input with suitable text, keeping all other words as they are, "
    "so that the result is a new, consistent input for the task above.\n\n"
    "Masked input: {example_masked}\nOutput: {example_original}\n\n"
    "Masked input: {seed_masked}\nOutput:"
)
INFILL_TEMPLATES = {"reference": REFERENCE_INFILL_TEMPLATE, "instructed": INSTRUCTED_INFILL_TEMPLATE}
ICL_TEMPLATE = "{instruction}\n\nInput: {a_input}\nOutput: {a_output}\n\nInput: {b_input}\nOutput: {b_output}\n\nInput:"


@dataclass(frozen=True)
class SynthesisSettings:
    mask_low: float = 0.2
    mask_high: float = 0.6
    keep_whitespace: bool = False
    keep_punctuation: bool = False
    infill_prompt: str = "reference"
    max_examples: int = 30
    max_seeds: int = 0
    retries: int = 1
    top_p: float = 0.6
    temperature: float = 0.9
    repetition_penalty: float = 1.2
    max_new_tokens: int = 256
    batch_size: int = 8
    span_candidates: int = 4
    span_lookahead_words: int = 4
    span_extra_tokens: int = 4
    ssr_samples: int = 3
    ssr_max_prompts: int = 0
    add_bos: bool = True

    @property
    def sampling(self) -> Sampling:
        return Sampling(do_sample=True, temperature=self.temperature, top_p=self.top_p,
                        repetition_penalty=self.repetition_penalty, max_new_tokens=self.max_new_tokens)


@dataclass(frozen=True)
class Job:
    """One pseudo input to make: seed s masked, with example e (prompt mode) and a retry index."""

    seed: Row
    example: Row | None
    retry: int
    masked: Masked
    example_masked: Masked | None


def plan_jobs(seeds: list[Row], settings: SynthesisSettings, seed: int, task: str | None = None) -> list[Job]:
    """`retries` times, for each seed s, for each other seed e (≤ max_examples, sampled with a fixed
    seed): s and e masked — the reference's loop order. With `max_seeds`, the seeds are a seeded
    sample stratified by output (seed files are sorted by label), never the head of the file."""
    rng = random.Random(seed)
    chosen = subsample(seeds, settings.max_seeds, seed)

    def mask(text: str) -> Masked:
        return contextual_mask(text, rng, settings.mask_low, settings.mask_high, task, settings.keep_whitespace,
                               settings.keep_punctuation)

    jobs = []
    for retry in range(settings.retries):
        for s in chosen:
            others = [e for e in seeds if e.id != s.id]
            examples = rng.sample(others, settings.max_examples) if len(others) > settings.max_examples else others
            for e in examples:
                jobs.append(Job(s, e, retry, mask(s.input), mask(e.input)))
    return jobs


def _pseudo_row(task: str, n: int, mode: str, instruction: str, new_input: str, provenance: dict,
                output: str | None = None) -> dict:
    row = {"id": f"{task}-{mode}-{n:05d}", "task": task, "input": new_input,
           "full_prompt": f"{instruction}\n\n{new_input}", "provenance": {"mode": mode, **provenance}}
    if output is not None:
        row["output"] = output
    return row


def text_after_last_output(text: str) -> str:
    return text.rsplit("Output:", 1)[-1].strip()


def synthesize_prompt_mode(model, tokenizer, task: str, seeds: list[Row], settings: SynthesisSettings,
                           seed: int) -> list[dict]:
    jobs = plan_jobs(seeds, settings, seed, task)
    if settings.infill_prompt not in INFILL_TEMPLATES:
        raise ValueError(f"unknown infill prompt {settings.infill_prompt!r}; choose from {sorted(INFILL_TEMPLATES)}")
    template = INFILL_TEMPLATES[settings.infill_prompt]
    prompts = [template.format(instruction=j.seed.instruction, example_masked=j.example_masked.text,
                               example_original=j.example.input, seed_masked=j.masked.text) for j in jobs]
    ids = [encode_plain(tokenizer, p, settings.add_bos) for p in prompts]
    outs = generate(model, tokenizer, ids, settings.sampling, settings.batch_size, seed=seed,
                    desc=f"synthesize {task} (prompt)")
    rows = []
    for n, (job, prompt, out) in enumerate(zip(jobs, prompts, outs)):
        rows.append(_pseudo_row(task, n, "prompt", job.seed.instruction, text_after_last_output(out.text), {
            "seed_id": job.seed.id, "example_id": job.example.id, "retry": job.retry,
            "mask_ratio": round(job.masked.ratio, 4), "masked_input": job.masked.text, "prompt": prompt}))
    return rows


def _first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def _glued_left(pieces: tuple, c: int) -> bool:
    """The blank at pieces[c] is attached to the text before it (structure-preserving masking: `['____`)."""
    return c > 0 and isinstance(pieces[c - 1], str) and bool(pieces[c - 1]) and not pieces[c - 1][-1].isspace()


def _attach(left: str, fill: str, glued: bool) -> str:
    return left + fill if glued else _join(left, fill)


def _join(left: str, fill: str) -> str:
    if not fill:
        return left
    if not left or left[-1].isspace():
        return left + fill
    return left + " " + fill


def synthesize_span_mode(model, tokenizer, task: str, seeds: list[Row], settings: SynthesisSettings,
                         seed: int) -> list[dict]:
    """Fill the blanks of every job left to right; all jobs advance one blank per round, batched."""
    jobs = plan_jobs(seeds, settings, seed, task)
    texts = [""] * len(jobs)          # text built so far (left context of the next blank)
    cursor = [0] * len(jobs)          # index into the job's pieces
    fills: list[list[str]] = [[] for _ in jobs]
    k = settings.span_candidates
    round_no = 0

    def advance_kept(i: int) -> None:
        pieces = jobs[i].masked.pieces
        while cursor[i] < len(pieces) and not isinstance(pieces[cursor[i]], Blank):
            texts[i] += pieces[cursor[i]]
            cursor[i] += 1

    for i in range(len(jobs)):
        advance_kept(i)
    while True:
        active = [i for i in range(len(jobs)) if cursor[i] < len(jobs[i].masked.pieces)]
        if not active:
            break
        contexts = [f"{jobs[i].seed.instruction}\n\n{texts[i]}".rstrip(" ") for i in active]
        context_ids = [encode_plain(tokenizer, c, settings.add_bos) for c in contexts]
        budget = max(jobs[i].masked.pieces[cursor[i]].n_words for i in active)
        sampling = Sampling(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                            repetition_penalty=settings.repetition_penalty,
                            max_new_tokens=int(1.5 * budget) + settings.span_extra_tokens)
        outs = generate(model, tokenizer, [c for c in context_ids for _ in range(k)], sampling,
                        settings.batch_size * k, seed=seed * 7919 + round_no, desc=f"synthesize {task} (span, blank {round_no + 1})")
        candidates = [[_first_words(outs[a * k + c].text, jobs[i].masked.pieces[cursor[i]].n_words)
                       for c in range(k)] for a, i in enumerate(active)]
        if settings.keep_punctuation:  # a blank holds a word's core; the punctuation around it is kept text
            candidates = [[split_core(cand)[1] for cand in cands] for cands in candidates]
        # Score every candidate by how likely the next kept words are after it (right context).
        score_prompts, score_conts, owners = [], [], []
        for a, i in enumerate(active):
            pieces = jobs[i].masked.pieces
            right = pieces[cursor[i] + 1] if cursor[i] + 1 < len(pieces) else ""
            lookahead = _first_words(right, settings.span_lookahead_words) if isinstance(right, str) else ""
            if not lookahead:
                continue
            for c, cand in enumerate(candidates[a]):
                left = _attach(contexts[a], cand, _glued_left(pieces, cursor[i]))
                score_prompts.append(encode_plain(tokenizer, left, settings.add_bos))
                gap = "" if right[:1] and not right[:1].isspace() else " "  # `____',` continues without a space
                score_conts.append(tokenizer(gap + lookahead, add_special_tokens=False).input_ids)
                owners.append((a, c))
        scores = {}
        if score_prompts:
            lps = continuation_logprobs(model, tokenizer.pad_token_id, score_prompts, score_conts,
                                        settings.batch_size * k)
            for (a, c), lp in zip(owners, lps):
                scores[(a, c)] = sum(lp)
        for a, i in enumerate(active):
            options = [c for c in range(k) if candidates[a][c]] or [0]
            best = max(options, key=lambda c: (scores.get((a, c), 0.0), -c))
            fill = candidates[a][best]
            fills[i].append(fill)
            texts[i] = _attach(texts[i], fill, _glued_left(jobs[i].masked.pieces, cursor[i]))
            cursor[i] += 1
            advance_kept(i)  # the kept text after a blank carries its own leading space (or none: `____',`)
        round_no += 1
    rows = []
    for n, job in enumerate(jobs):
        rows.append(_pseudo_row(task, n, "span", job.seed.instruction, texts[n].strip(), {
            "seed_id": job.seed.id, "example_id": None, "retry": job.retry,
            "mask_ratio": round(job.masked.ratio, 4), "masked_input": job.masked.text, "fills": fills[n]}))
    return rows


def parse_icl_segments(text: str) -> list[tuple[str, str, int]]:
    """SSR's parser: split an ICL continuation at every "Input:" and each segment at "Output:".

    Returns (input, output, number of "Output:" markers) per segment; a segment with exactly one marker
    is a pair, the others keep their text as the input and an empty output (the filter decides)."""
    segments = []
    for segment in text.split("Input:"):
        parts = segment.split("Output:")
        if len(parts) == 2:
            segments.append((parts[0].strip(), parts[1].strip(), 1))
        else:
            segments.append((segment.strip(), "", len(parts) - 1))
    return segments


def icl_pairs(seeds: list[Row], max_prompts: int, seed: int) -> list[tuple[Row, Row]]:
    """Ordered seed pairs (a, b), a ≠ b: all of them, or a seeded sample of `max_prompts`."""
    pairs = [(a, b) for a in seeds for b in seeds if a.id != b.id]
    return subsample(pairs, max_prompts, seed, label=lambda p: (p[0].output, p[1].output),
                     stratify=has_small_label_set([s.output for s in seeds]))


def synthesize_icl_mode(model, tokenizer, task: str, seeds: list[Row], settings: SynthesisSettings,
                        seed: int) -> list[dict]:
    """SSR: 2-shot ICL over ordered seed pairs, `ssr_samples` samples each; rows carry an output. A prompt's
    identical continuations count once (SSR's generator keeps the set of its retries' texts).

    With `ssr_max_prompts`, the pairs are a seeded sample, stratified by the pair's two labels where
    the seeds' outputs form a small label set (so both classes appear as examples and as shots)."""
    pairs = icl_pairs(seeds, settings.ssr_max_prompts, seed)
    prompts = [ICL_TEMPLATE.format(instruction=a.instruction, a_input=a.input, a_output=a.output, b_input=b.input,
                                   b_output=b.output) for a, b in pairs]
    ids = [encode_plain(tokenizer, p, settings.add_bos) for p in prompts]
    expanded = [(p, s) for p in range(len(prompts)) for s in range(settings.ssr_samples)]
    outs = generate(model, tokenizer, [ids[p] for p, _ in expanded], settings.sampling, settings.batch_size,
                    seed=seed, desc=f"synthesize {task} (icl)")
    rows, seen = [], set()
    for (p, s), out in zip(expanded, outs):
        if (p, out.text) in seen:
            continue
        seen.add((p, out.text))
        a, b = pairs[p]
        for k, (new_input, new_output, markers) in enumerate(parse_icl_segments(out.text)):
            rows.append(_pseudo_row(task, len(rows), "icl", a.instruction, new_input, {
                "seed_id": a.id, "example_id": b.id, "retry": s, "segment": k, "output_markers": markers,
                "mask_ratio": None, "prompt": prompts[p]}, output=new_output))
    return rows


MODES = {"prompt": synthesize_prompt_mode, "span": synthesize_span_mode, "icl": synthesize_icl_mode}


def synthesize(model, tokenizer, task: str, seeds: list[Row], mode: str, settings: SynthesisSettings,
               seed: int) -> list[dict]:
    """Raw pseudo rows for one task (unfiltered)."""
    if mode not in MODES:
        raise ValueError(f"unknown synthesis mode {mode!r}")
    return MODES[mode](model, tokenizer, task, seeds, settings, seed)
