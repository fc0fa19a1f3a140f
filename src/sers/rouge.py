"""ROUGE-L F1 × 100 with a tokenizer that keeps non-ASCII words (METHOD.md §7)."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

from sers.errors import SersError

# \w with re.UNICODE keeps letters of any script and digits; the rouge_score default tokenizer
# maps every non-[a-z0-9] character to a space, so Spanish "está" would become "est".
_WORD = re.compile(r"\w+", re.UNICODE)


class UnicodeTokenizer:
    """Lowercase, then split into unicode word tokens (letters, digits, underscore)."""

    def tokenize(self, text: str) -> list[str]:
        """Return the word tokens of `text`."""
        return _WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _scorer():
    # imported here: rouge_score pulls in nltk (~1.3 s), which the jobs that only import this module
    # (evaluate: generation without scoring) should not pay at start-up
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 × 100 of `prediction` against `reference`; 0 if either is empty."""
    if not prediction or not prediction.strip() or not reference or not reference.strip():
        return 0.0
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure * 100.0)


def rouge_l_many(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Row-wise `rouge_l` over two equally long sequences."""
    if len(preds) != len(refs):
        raise SersError(f"rouge_l_many: {len(preds)} predictions but {len(refs)} references")
    return [rouge_l(p, r) for p, r in zip(preds, refs)]
