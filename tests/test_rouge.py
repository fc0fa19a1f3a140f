import pytest
from rouge_score import rouge_scorer

from sers.config import validate_config
from sers.data import Row
from sers.errors import SersError
from sers.evaluation import prompt_digest, score_rows
from sers.rouge import SCORERS, UnicodeTokenizer, rouge_l, rouge_l_many, rouge_l_reference, scorer


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


# The reference scorer (eval.rouge: reference): jieba tokens, rouge_chinese's F = 2PR / (P + R + 1e-8),
# × 100 rounded to 4 places; case-sensitive, punctuation tokens count.


def test_reference_is_case_sensitive_where_unicode_is_not():
    assert rouge_l_reference("Positive", "positive") == 0.0
    assert rouge_l("Positive", "positive") == pytest.approx(100.0)
    # [The, cat, sat, .] vs [the, CAT, sat]: LCS = [sat], P = 1/4, R = 1/3 -> F = 2/7
    assert rouge_l_reference("The cat sat.", "the CAT sat") == 28.5714


def test_reference_identical_scores_100_after_rounding():
    # 2PR / (P + R + 1e-8) = 0.999999995 before rounding to 4 places
    assert rouge_l_reference("Positive", "Positive") == 100.0


def test_reference_partial_overlap():
    # [the, cat, sat] vs [the, cat, sat, on, the, mat]: LCS 3, P = 1, R = 1/2 -> F = 2/3 -> 66.6667 (rounded)
    assert rouge_l_reference("the cat sat", "the cat sat on the mat") == 66.6667
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(200 / 3)
    # punctuation is a token: [Hello, ",", world, !] vs [Hello, world]: LCS 2, P = 1/2, R = 1 -> 2/3
    assert rouge_l_reference("Hello, world!", "Hello world") == 66.6667
    assert rouge_l("Hello, world!", "Hello world") == pytest.approx(100.0)


def test_reference_segments_chinese_with_jieba():
    # jieba: [我, 爱, 北京, 天安门] vs [我, 爱, 北京]: LCS 3, P = 3/4, R = 1 -> F = 6/7 (characters would give 8/11)
    assert rouge_l_reference("我爱北京天安门", "我爱北京") == 85.7143
    assert rouge_l("我爱北京天安门", "我爱北京") == 0.0  # one \w+ token each, and they differ


@pytest.mark.parametrize("pred,ref", [("", "hola"), ("hola", ""), ("   ", "hola"), ("hola", "\n"), ("", "")])
def test_reference_empty_scores_zero(pred, ref):
    assert rouge_l_reference(pred, ref) == 0.0


def test_scorer_by_name():
    assert scorer("unicode") is rouge_l
    assert scorer("reference") is rouge_l_reference
    assert set(SCORERS) == {"unicode", "reference"}
    with pytest.raises(SersError, match="eval.rouge"):
        scorer("rouge_chinese")


def test_config_eval_rouge_defaults_to_unicode_and_takes_only_known_scorers():
    assert validate_config({})["eval"]["rouge"] == "unicode"
    assert validate_config({"eval": {"rouge": "reference"}})["eval"]["rouge"] == "reference"
    with pytest.raises(SersError, match="eval.rouge"):
        validate_config({"eval": {"rouge": "rouge_chinese"}})


def test_score_rows_uses_the_named_scorer():
    rows = [Row("r1", "x", "Positive", "Classify.\n\nx"), Row("r2", "y", "the cat sat on the mat", "Q.\n\ny")]
    gens = [{"id": r.id, "prompt_digest": prompt_digest(r), "prediction": p}
            for r, p in zip(rows, ["positive", "the cat sat"])]
    _, unicode = score_rows(rows, gens)
    assert unicode["rouge_l_mean"] == pytest.approx((100 + 200 / 3) / 2)
    predictions, reference = score_rows(rows, gens, rouge="reference")
    assert [p["rouge_l"] for p in predictions] == [0.0, 66.6667]
    assert reference["rouge_l_mean"] == pytest.approx(66.6667 / 2)
