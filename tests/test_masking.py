import random
import re

from sers.masking import BLANK, Blank, always_kept, contextual_mask, kept_anyway, ratio_cap, split_core


def test_protected_and_kept_words_are_never_masked():
    text = 'Context: The BIG dog did not bark at 12 cats , "really" [ Hello ] Question: why never ?'
    for seed in range(30):
        m = contextual_mask(text, random.Random(seed), low=0.6, high=0.6)
        kept_text = "".join(p for p in m.pieces if isinstance(p, str))
        for word in ["Context:", "Question:", "BIG", "not", "12", ",", "[", "]", "Hello", "never"]:
            assert word in kept_text.split(), (seed, word, m.text)


def test_always_kept_rules():
    assert always_kept("-3.5") and always_kept("42") and always_kept("Paris") and always_kept("NASA")
    assert not always_kept("The")  # Title-case but only 3 characters
    assert not always_kept("dog") and not always_kept("NA")  # caps need 3+ characters
    assert always_kept("no") and always_kept('"') and always_kept(",")


def test_ratio_caps_by_length():
    assert ratio_cap(19) == 0.3 and ratio_cap(20) == 0.4 and ratio_cap(99) == 0.4 and ratio_cap(100) == 0.6
    short = " ".join(["word"] * 10)  # 10 candidates, cap 0.3 → at most ⌊0.3·10⌋+1 masked... keep ⌊(1-r)·10⌋ ≥ 7
    for seed in range(50):
        m = contextual_mask(short, random.Random(seed), low=0.2, high=0.6)
        assert 0.2 <= m.ratio <= 0.3
        masked = sum(b.n_words for b in m.blanks)
        assert masked == 10 - int((1 - m.ratio) * 10)
    long = " ".join(["word"] * 150)
    ratios = [contextual_mask(long, random.Random(s), 0.2, 0.6).ratio for s in range(50)]
    assert max(ratios) > 0.45 and all(0.2 <= r <= 0.6 for r in ratios)


def test_short_inputs_unchanged_and_runs_become_one_blank():
    assert contextual_mask("two words", random.Random(0)).text == "two words"
    m = contextual_mask("alpha beta gamma delta epsilon zeta eta theta iota kappa", random.Random(3), 0.3, 0.3)
    assert BLANK + " " + BLANK not in m.text  # adjacent masked words share one blank
    assert all(isinstance(p, Blank) != isinstance(q, Blank) for p, q in zip(m.pieces, m.pieces[1:]))


def test_masking_keeps_whitespace_and_is_seeded():
    text = "Context: a b c d e f g h .\nQuestion: what is it ?"
    a = contextual_mask(text, random.Random(5), keep_whitespace=True)
    b = contextual_mask(text, random.Random(5), keep_whitespace=True)
    assert a == b
    assert "\nQuestion:" in a.text
    restored = "".join(p.original if isinstance(p, Blank) else p for p in a.pieces)
    assert restored == text


class FixedRNG:
    """A fixed RNG: uniform() returns `ratio`, sample() the first k of the population."""

    def __init__(self, ratio: float):
        self.ratio, self.uniform_args = ratio, []

    def uniform(self, a, b):
        self.uniform_args.append((a, b))
        return self.ratio

    def sample(self, population, k):
        return list(population)[:k]


def test_kept_anyway_words_count_among_the_candidates_as_in_the_reference():
    # 10 words, one protected (","): 9 candidates, the three kept-anyway words among them.
    # r = 0.3 keeps ⌊0.7·9⌋ = 6 drawn candidates: the first six (three of them kept anyway), so only
    # "bark at cats" is masked. Leaving the kept-anyway words out of the candidates (the old code)
    # would keep ⌊0.7·6⌋ = 4 of the other six and mask only "at cats".
    rng = FixedRNG(0.3)
    m = contextual_mask("Yesterday NASA not the dog did bark at cats ,", rng)
    assert rng.uniform_args == [(0.2, 0.3)]  # U(low, min(high, cap)), cap 0.3 under 20 words
    assert m.text == "Yesterday NASA not the dog did ____ ,"
    assert m.blanks == [Blank("bark at cats", 3)]


def test_qa_rule_puts_question_on_a_new_line_and_other_tasks_collapse_whitespace():
    text = "Context: the dog barked loudly .   Question: why did it bark ?"
    qa = contextual_mask(text, FixedRNG(0.3), task="qa")
    # 12 words, "Context:" and "Question:" protected, ⌊0.7·10⌋ = 7 of the 10 others drawn
    assert qa.text == "Context: the dog barked loudly . \nQuestion: why did ____"
    other = contextual_mask("first line\nsecond  line here now", FixedRNG(0.2), task="sum")
    assert "\n" not in other.text and "  " not in other.text
    kept = contextual_mask("first line\nsecond  line here now", FixedRNG(0.2), task="sum", keep_whitespace=True)
    assert kept.text.startswith("first line\nsecond  line")


def test_kept_anyway_follows_the_reference_rules():
    assert kept_anyway("Hello,") and kept_anyway("Hello-World")  # str.istitle, punctuation allowed
    assert not kept_anyway("ÉTÉ") and kept_anyway("USA")  # ALL-CAPS means [A-Z]{3,}


def test_structure_preserving_masking_keeps_every_non_alphanumeric_character():
    text = "8, ['a', '9533', '4187', 'v', \"quoted text\", (x-ray), end."
    skeleton = lambda s: re.sub(r"[\w\s]", "", s)  # noqa: E731  (blanks are underscores, i.e. \w)
    for seed in range(20):
        m = contextual_mask(text, random.Random(seed), 0.6, 0.6, keep_punctuation=True)
        assert skeleton(m.text) == skeleton(text), (seed, m.text)
        assert all(b.original == split_core(b.original)[1] for b in m.blanks)  # only cores are blanked
        restored = "".join(p.original if isinstance(p, Blank) else p for p in m.pieces)
        assert restored == text
    m = contextual_mask(text, FixedRNG(0.3), keep_punctuation=True)
    assert "['____', '____', '____', 'v'" in m.text or m.blanks  # the list keeps its quotes and commas
    assert split_core("['a',") == ("['", "a", "',") and split_core("?") == ("?", "", "")
    assert split_core("x-ray),") == ("", "x-ray", "),")
