
import pytest

from sers.masking import Blank
from sers.models import load_model, load_tokenizer
from sers.synthesis import SynthesisSettings, parse_icl_segments, plan_jobs, synthesize, text_after_last_output

from _tiny import sample_rows, tiny_model_dir  # noqa: F401


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):  # noqa: F811
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


SETTINGS = SynthesisSettings(max_seeds=2, max_examples=2, batch_size=4, max_new_tokens=12, span_candidates=2,
                             ssr_max_prompts=3, ssr_samples=2)


def test_plan_covers_seed_example_pairs_and_retries():
    seeds = sample_rows("sa")
    jobs = plan_jobs(seeds, SynthesisSettings(max_examples=3, retries=2), seed=1)
    assert len(jobs) == 20 * 3 * 2
    assert all(j.example.id != j.seed.id for j in jobs)
    assert [j.masked for j in plan_jobs(seeds, SynthesisSettings(max_examples=3, retries=2), 1)] == [j.masked for j in jobs]


def test_span_mode_keeps_every_unmasked_word_in_place(tiny):
    model, tok = tiny
    seeds = sample_rows("qa")
    rows = synthesize(model, tok, "qa", seeds, "span", SETTINGS, seed=4)
    assert len(rows) == 4
    jobs = plan_jobs(seeds, SETTINGS, seed=4, task="qa")
    for row, job in zip(rows, jobs):
        prov = row["provenance"]
        assert prov["seed_id"] == job.seed.id and prov["masked_input"] == job.masked.text
        assert row["full_prompt"] == job.seed.instruction + "\n\n" + row["input"]
        # the kept pieces appear in order in the new input
        pos = 0
        for piece in job.masked.pieces:
            if isinstance(piece, str) and piece.strip():
                found = row["input"].find(piece.strip(), pos)
                assert found >= 0, (piece, row["input"])
                pos = found + len(piece.strip())
        for fill, blank in zip(prov["fills"], job.masked.blanks):
            assert len(fill.split()) <= blank.n_words


def test_span_mode_is_seeded(tiny):
    model, tok = tiny
    a = synthesize(model, tok, "sa", sample_rows("sa"), "span", SETTINGS, seed=9)
    b = synthesize(model, tok, "sa", sample_rows("sa"), "span", SETTINGS, seed=9)
    assert a == b


def test_prompt_and_icl_modes_record_provenance(tiny):
    model, tok = tiny
    rows = synthesize(model, tok, "sa", sample_rows("sa"), "prompt", SETTINGS, seed=2)
    assert len(rows) == 4
    p = rows[0]["provenance"]
    assert p["mode"] == "prompt" and p["prompt"].startswith("Replace `____` in the context") and p["example_id"] and 0 < p["mask_ratio"] <= 0.6
    icl = synthesize(model, tok, "sa", sample_rows("sa"), "icl", SETTINGS, seed=2)
    assert len(icl) >= 3 * 2 and all("output" in r for r in icl)  # a row per segment of each continuation
    assert icl[0]["provenance"]["prompt"].rstrip().endswith("Input:")
    assert len({(r["provenance"]["seed_id"], r["provenance"]["example_id"], r["provenance"]["retry"])
                for r in icl}) == 3 * 2
    assert len({r["id"] for r in icl}) == len(icl)


def test_parsers():
    assert text_after_last_output("Output: a\nOutput:  new input ") == "new input"
    # SSR's parser: split at every "Input:", then each segment at "Output:"; every pair is kept
    assert parse_icl_segments(" my input\nOutput: the answer\n\nInput: second\nOutput: two\n\nInput: third") == [
        ("my input", "the answer", 1), ("second", "two", 1), ("third", "", 0)]
    assert parse_icl_segments("a Output: b Output: c") == [("a Output: b Output: c", "", 2)]


def test_span_mode_with_structure_preserving_masks_fills_only_the_cores(tiny):
    import dataclasses

    model, tok = tiny
    settings = dataclasses.replace(SETTINGS, keep_punctuation=True, mask_low=0.6, mask_high=0.6)
    seeds = sample_rows("pe")
    rows = synthesize(model, tok, "pe", seeds, "span", settings, seed=5)
    for row, job in zip(rows, plan_jobs(seeds, settings, seed=5, task="pe")):
        fills = iter(row["provenance"]["fills"])
        rebuilt = "".join(next(fills) if isinstance(p, Blank) else p for p in job.masked.pieces)
        assert rebuilt.strip() == row["input"]  # no space slipped in next to a quote or bracket
        assert "['" in row["input"] and "', '" in row["input"]
