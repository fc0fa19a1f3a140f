"""Contextual masking of a seed input (METHOD.md §1).

Words are whitespace tokens. Protected words (`Context:`, `Question:`, quotes, brackets, commas)
are never masked; numbers, Title-case words over 3 characters, ALL-CAPS words of 3+ characters and
negations are kept anyway. Of the remaining candidates ⌊(1 − r)·|candidates|⌋ are kept at random,
r ~ U(low, min(high, cap)) with a cap that shrinks for short inputs; every run of masked words
becomes one blank.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

BLANK = "____"
PROTECTED = frozenset({"Context:", "Question:", '"', "[", "]", ","})
NEGATIONS = frozenset({"not", "no", "never"})
NUMBER = re.compile(r"-?\d+\.?\d*")
MIN_WORDS = 3


def ratio_cap(n_words: int) -> float:
    return 0.3 if n_words < 20 else 0.4 if n_words < 100 else 0.6


def always_kept(word: str) -> bool:
    """Words that carry the input's structure or meaning and are never candidates for masking."""
    return (
        word in PROTECTED
        or bool(NUMBER.fullmatch(word))
        or (len(word) > 3 and word[0].isupper() and word[1:].islower())
        or (len(word) >= 3 and word.isalpha() and word.isupper())
        or word in NEGATIONS
    )


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


def contextual_mask(text: str, rng: random.Random, low: float = 0.2, high: float = 0.6) -> Masked:
    words = text.split()
    if len(words) < MIN_WORDS:
        return Masked((text,), 0.0)
    upper = min(high, ratio_cap(len(words)))
    ratio = rng.uniform(min(low, upper), upper)
    candidates = [i for i, w in enumerate(words) if not always_kept(w)]
    n_keep = int((1 - ratio) * len(candidates))
    kept = set(rng.sample(candidates, n_keep)) | {i for i, w in enumerate(words) if always_kept(w)}
    # Rebuild from the original text so that whitespace (line breaks of "Context: …\nQuestion: …")
    # survives; the whitespace between two masked words belongs to their blank.
    parts = re.findall(r"\S+|\s+", text)
    pieces: list = []
    blank_words: list[str] = []
    pending_space = ""
    word_index = -1

    def add_text(s: str) -> None:
        if pieces and isinstance(pieces[-1], str):
            pieces[-1] += s
        else:
            pieces.append(s)

    for part in parts:
        if part.isspace():
            if blank_words:
                pending_space = part  # inside the masked run, or the gap after it
            else:
                add_text(part)
            continue
        word_index += 1
        if word_index in kept:
            if blank_words:
                pieces.append(Blank(" ".join(blank_words), len(blank_words)))
                blank_words = []
            add_text(pending_space + part)
            pending_space = ""
        else:
            blank_words.append(part)
            pending_space = ""
    if blank_words:
        pieces.append(Blank(" ".join(blank_words), len(blank_words)))
    if pending_space:
        add_text(pending_space)
    return Masked(tuple(pieces), ratio)
