"""Contextual masking of a seed input (METHOD.md §1), as the reference's `contextual_mask` does it.

Words are whitespace tokens; inputs of fewer than 3 words come back unchanged. Protected words
(`Context:`, `Question:`, quotes, brackets, commas) are never masked. Every other word is a
candidate — the "kept anyway" words (numbers, Title-case words over 3 characters, ALL-CAPS words of
3+ letters, negations) included: ⌊(1 − r)·|candidates|⌋ candidates are drawn to keep, and the
kept-anyway words are kept whether drawn or not. r ~ U(low, min(high, cap)), the cap shrinking for
short inputs. Every run of masked words becomes one blank.

Whitespace: the reference joins the words with single spaces and, for the `qa` task, puts
"Question" on a new line (`keep_whitespace=False`, the faithful default). `keep_whitespace=True`
keeps the input's own spaces and line breaks instead (dialogues, multi-paragraph texts).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

BLANK = "____"
PROTECTED = frozenset({"Context:", "Question:", '"', "[", "]", ","})
NEGATIONS = frozenset({"not", "no", "never"})
NUMBER = re.compile(r"-?\d+\.?\d*")
ALL_CAPS = re.compile(r"[A-Z]{3,}")
MIN_WORDS = 3
QA_TASK = "qa"
WORDLIKE = re.compile(r"\w+")


def ratio_cap(n_words: int) -> float:
    return 0.3 if n_words < 20 else 0.4 if n_words < 100 else 0.6


def kept_anyway(word: str) -> bool:
    """Words the reference keeps whether or not they were drawn (`_should_retain`)."""
    return (
        bool(NUMBER.fullmatch(word))
        or (word.istitle() and len(word) > 3)
        or bool(ALL_CAPS.fullmatch(word))
        or word in NEGATIONS
    )


def always_kept(word: str) -> bool:
    """Never masked: protected, or kept anyway."""
    return word in PROTECTED or kept_anyway(word)


@dataclass(frozen=True)
class Blank:
    original: str  # the masked words, kept for provenance and span length
    n_words: int


@dataclass(frozen=True)
class Masked:
    pieces: tuple  # str (kept text) and Blank, in order
    ratio: float   # the drawn mask ratio r (0 when the input was too short to mask)

    @property
    def text(self) -> str:
        return "".join(BLANK if isinstance(p, Blank) else p for p in self.pieces)

    @property
    def blanks(self) -> list[Blank]:
        return [p for p in self.pieces if isinstance(p, Blank)]


def kept_indices(words: list[str], rng: random.Random, low: float, high: float) -> tuple[set[int], float]:
    """(indices of the words that stay, the drawn ratio r); the draws follow the reference's order."""
    ratio = rng.uniform(low, min(high, ratio_cap(len(words))))
    protected = {i for i, w in enumerate(words) if w in PROTECTED}
    candidates = [i for i in range(len(words)) if i not in protected]
    n_keep = int(len(candidates) * (1 - ratio))
    drawn = set(rng.sample(candidates, n_keep))
    return protected | drawn | {i for i in candidates if kept_anyway(words[i])}, ratio


def split_core(word: str) -> tuple[str, str, str]:
    """(leading punctuation, alphanumeric core, trailing punctuation): `['a',` → ("['", "a", "',")."""
    m = re.fullmatch(r"(\W*)(\w(?:.*\w)?)?(\W*)", word, flags=re.DOTALL)
    return (m.group(1), m.group(2) or "", m.group(3)) if m else ("", word, "")


def contextual_mask(text: str, rng: random.Random, low: float = 0.2, high: float = 0.6, task: str | None = None,
                    keep_whitespace: bool = False, keep_punctuation: bool = False) -> Masked:
    """Mask `text` as the reference does; `keep_punctuation` blanks only the alphanumeric runs of a
    masked word and keeps its quotes, brackets, commas and hyphens in place (`['a',` → `['____',`,
    `x-ray` → `____-____`), so lists and code-like inputs stay well-formed."""
    words = text.split()
    if len(words) < MIN_WORDS:
        return Masked((text,), 0.0)
    kept, ratio = kept_indices(words, rng, low, high)
    # the whitespace between two masked words belongs to their blank
    parts = re.findall(r"\S+|\s+", text if keep_whitespace else " ".join(words))
    pieces: list = []
    blank_words: list[str] = []
    pending_space = ""
    word_index = -1

    def add_text(s: str) -> None:
        if pieces and isinstance(pieces[-1], str):
            pieces[-1] += s
        else:
            pieces.append(s)

    def close_blank() -> None:
        nonlocal blank_words
        if blank_words:
            pieces.append(Blank(" ".join(blank_words), len(blank_words)))
            blank_words = []

    for part in parts:
        if part.isspace():
            if blank_words:
                pending_space = part  # inside the masked run, or the gap after it
            else:
                add_text(part)
            continue
        word_index += 1
        segments = re.findall(r"\w+|\W+", part) if keep_punctuation else [part]
        if word_index in kept or (keep_punctuation and not any(WORDLIKE.fullmatch(x) for x in segments)):
            close_blank()
            add_text(pending_space + part)
            pending_space = ""
            continue
        for n, segment in enumerate(segments):
            if keep_punctuation and not WORDLIKE.fullmatch(segment):  # punctuation stays, and ends a blank
                close_blank()
                add_text((pending_space if n == 0 else "") + segment)
            else:  # a masked word (or its alphanumeric core) joins the running blank
                blank_words.append(segment)
            if n == 0:
                pending_space = ""
    close_blank()
    if pending_space:
        add_text(pending_space)
    if task == QA_TASK and not keep_whitespace:  # the reference's qa rule: "Question" starts a new line
        pieces = [p.replace("Question", "\nQuestion") if isinstance(p, str) else p for p in pieces]
    return Masked(tuple(pieces), ratio)
