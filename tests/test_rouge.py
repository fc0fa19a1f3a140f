import pytest
from rouge_score import rouge_scorer

from sers.errors import SersError
from sers.rouge import UnicodeTokenizer, rouge_l, rouge_l_many


def test_spanish_words_count():
    # tokens: [el, gato, está, aquí] vs [el, gato, está, allí]; LCS = 3, P = R = 3/4 -> F1 = 75
    assert rouge_l("el gato está aquí", "el gato está allí") == pytest.approx(75.0)


def test_default_tokenizer_would_differ():
    # The default tokenizer turns both "esté" and "está" into "est" and scores them identical.
    default = rouge_scorer.RougeScorer(["rougeL"])
    assert default.score("está", "esté")["rougeL"].fmeasure == pytest.approx(1.0)
    assert rouge_l("esté", "está") == 0.0
    # A wholly non-ASCII word vanishes under the default tokenizer; ours keeps it.
    assert default.score("ñú", "ñú")["rougeL"].fmeasure == 0.0
    assert rouge_l("ñú", "ñú") == pytest.approx(100.0)


def test_tokenizer_lowercases_and_keeps_digits():
    assert UnicodeTokenizer().tokenize("Está  42, ¿Sí?") == ["está", "42", "sí"]


@pytest.mark.parametrize("pred,ref", [("", "hola"), ("hola", ""), ("   ", "hola"), ("hola", "\n"), ("", "")])
def test_empty_scores_zero(pred, ref):
    assert rouge_l(pred, ref) == 0.0


def test_identical_scores_100_case_insensitive():
    assert rouge_l("The cat sat.", "the CAT sat") == pytest.approx(100.0)


def test_many():
    assert rouge_l_many(["a b", ""], ["a b", "x"]) == [pytest.approx(100.0), 0.0]
    with pytest.raises(SersError):
        rouge_l_many(["a"], [])
