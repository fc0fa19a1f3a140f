"""ROUGE-L F1 × 100 (METHOD.md §7), by one of two scorers that `eval.rouge` names (`scorer`):

- "unicode" (`rouge_l`, the default): rouge_score's LCS F1 over lowercased unicode word tokens.
- "reference" (`rouge_l_reference`): the reference code's metric (ComputeMetrics in
  llmtuner/tuner/{sft,ssr}/metric.py): jieba segmentation, rouge_chinese's ROUGE-L "f" × 100 rounded to 4 places;
  case-sensitive, and punctuation tokens count as words.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Sequence

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


@lru_cache(maxsize=1)
def _reference_backend():
    # imported here, like rouge_score above: jieba loads its dictionary (~1 s) on first use.
    # A private Tokenizer on jieba's bundled dictionary: the same segmentation as the module-level
    # jieba.cut the reference calls, but no other code's jieba.add_word/load_userdict can change it.
    import logging

    import jieba
    from rouge_chinese import Rouge

    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict ..." lines in every job's log
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    # rouge-l only: the reference also computes rouge-1/2, which do not change the rouge-l value
    return tokenizer, Rouge(metrics=["rouge-l"])


def rouge_l_reference(prediction: str, reference: str) -> float:
    """The reference code's ROUGE-L F × 100 of `prediction` against `reference` (see the module docstring):
    0 if either has no token after jieba segmentation; no lowercasing."""
    tokenizer, rouge = _reference_backend()
    hypothesis = list(tokenizer.cut(prediction))
    label = list(tokenizer.cut(reference))
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(label).split()) == 0:
        return 0.0
    scores = rouge.get_scores(" ".join(hypothesis), " ".join(label))
    return float(round(scores[0]["rouge-l"]["f"] * 100, 4))


SCORERS: dict[str, Callable[[str, str], float]] = {"unicode": rouge_l, "reference": rouge_l_reference}


def scorer(name: str) -> Callable[[str, str], float]:
    """The row scorer that config key `eval.rouge` names."""
    try:
        return SCORERS[name]
    except KeyError:
        raise SersError(f"eval.rouge: unknown ROUGE-L scorer {name!r} (one of {', '.join(SCORERS)})") from None
