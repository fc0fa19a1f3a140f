"""Prompt formats (plain, chat template, llama2) and the BOS token in every path that encodes a prompt."""
from __future__ import annotations

import pytest

from sers.errors import SersError
from sers.prompts import LLAMA2_SYSTEM, bos_ids, encode_example, encode_plain, encode_prompt, prompt_text, target_text

from _tiny import sample_rows, tiny_model_dir  # noqa: F401


@pytest.fixture
def tok(tiny_model_dir):  # noqa: F811
    from sers.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture
def bos_tok(tiny_model_dir):  # noqa: F811
    """The tiny tokenizer made to put <s> before plain text, as LLaMA's does."""
    from tokenizers import processors

    from sers.models import load_tokenizer

    t = load_tokenizer(str(tiny_model_dir))
    t.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", t.bos_token_id)])
    assert t("a").input_ids[0] == t.bos_token_id
    return t


def test_formats(tok):
    assert prompt_text(tok, "Classify.\n\nfine", "plain") == "Classify.\n\nfine\n\nOutput:"
    assert prompt_text(tok, "Classify.\n\nfine", "llama2") == (
        f"[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\nClassify.\n\nfine [/INST] ")
    assert LLAMA2_SYSTEM.startswith("You are a helpful, respectful and honest assistant. Always answer as helpfully")
    assert target_text("positive", "plain") == " positive" and target_text("positive", "llama2") == "positive"
    with pytest.raises(SersError, match="no chat template"):
        prompt_text(tok, "x", "chat_template")
    with pytest.raises(SersError, match="prompt_format"):
        prompt_text(tok, "x", "alpaca")


@pytest.mark.parametrize("fmt", ["plain", "llama2"])
def test_prompts_carry_one_bos_where_the_tokenizer_expects_one(tok, bos_tok, fmt):
    row = sample_rows("sa")[0]
    bos = bos_tok.bos_token_id
    ids = encode_prompt(bos_tok, row.full_prompt, fmt, 4096)
    assert ids[0] == bos and ids[1] != bos
    prompt, target = encode_example(bos_tok, row.full_prompt, row.output, fmt)
    assert prompt[0] == bos and bos not in target
    assert encode_plain(bos_tok, "some text")[:1] == [bos]
    assert encode_plain(bos_tok, "<s> some text").count(bos) == 1  # a template that writes <s> itself
    # the reference's synthesis prompts (synthesis.add_bos: false): the text's tokens alone
    assert encode_plain(bos_tok, "some text", bos=False) == bos_tok("some text", add_special_tokens=False).input_ids
    assert bos not in encode_plain(bos_tok, "some text", bos=False)
    # a truncated prompt keeps its BOS
    assert encode_prompt(bos_tok, row.full_prompt * 5, fmt, 64)[0] == bos
    # a tokenizer without BOS (the tiny one, GPT-2 style) gets none
    assert bos_ids(tok) == [] and encode_prompt(tok, row.full_prompt, fmt, 4096)[0] != tok.bos_token_id


@pytest.mark.parametrize("mode", ["prompt", "span", "icl"])
def test_synthesis_prompts_carry_the_bos(bos_tok, mode, monkeypatch):
    """Synthesis encodes its prompts (and span contexts and scoring prompts) with the BOS as well."""
    import sers.synthesis as synthesis
    from sers.generation import Generated

    seen: list[list[int]] = []

    def fake_generate(model, tokenizer, prompts, *a, **k):
        seen.extend(prompts)
        return [Generated([], "a few words here", 0.0) for _ in prompts]

    def fake_scores(model, pad_id, prompts, conts, *a, **k):
        seen.extend(prompts)
        return [[0.0] * len(c) for c in conts]

    monkeypatch.setattr(synthesis, "generate", fake_generate)
    monkeypatch.setattr(synthesis, "continuation_logprobs", fake_scores)
    settings = synthesis.SynthesisSettings(max_seeds=2, max_examples=1, ssr_max_prompts=2, ssr_samples=1)
    synthesis.synthesize(None, bos_tok, "sa", sample_rows("sa"), mode, settings, seed=3)
    assert seen and all(p[0] == bos_tok.bos_token_id and p[1] != bos_tok.bos_token_id for p in seen)
