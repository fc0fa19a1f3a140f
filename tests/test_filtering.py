from sers.filtering import filter_icl_rows, filter_rows, icl_settings, normalise, settings_for_task


def count_words(text):
    return len(text.split())


def row(text, **extra):
    return {"id": text[:8], "input": text, "full_prompt": "Do the task.\n\n" + text, **extra}


def reasons(task, texts, **user):
    settings = settings_for_task(task, {"min_tokens": 3}, user or None)
    kept, dropped, summary = filter_rows([row(t) for t in texts], settings, count_words)
    return [d["drop_reason"] for d in dropped], kept, summary


def test_generic_rules():
    got, kept, _ = reasons("x", ["这是 中文 文本 好", "a b ____ c", "a = b c", "one two", "fine input here ok"])
    assert got == ["cjk", "contains '_'", "contains '='", "under 3 tokens"]
    assert [k["input"] for k in kept] == ["fine input here ok"]


def test_max_tokens_and_embedding_limit():
    settings = settings_for_task("sa", {"min_tokens": 1})
    assert settings["max_tokens"] == 200
    kept, dropped, _ = filter_rows([row("w " * 201)], settings, count_words)
    assert dropped[0]["drop_reason"] == "over 200 tokens"
    kept, dropped, _ = filter_rows([row("a b c")], settings_for_task("x", {"min_tokens": 1, "max_embed_tokens": 2}),
                                   count_words, count_embed_tokens=count_words)
    assert dropped[0]["drop_reason"] == "over 2 embedding tokens"


def test_cut_markers_and_dedup():
    settings = settings_for_task("x", {"min_tokens": 1})
    assert normalise("first part\n\nsecond", settings) == "first part"
    assert normalise("first ### second", settings) == "first "
    # the reference's if/elif: with a blank line present, "###" before it is not a cut
    assert normalise("first ### second\n\nthird", settings) == "first ### second"
    kept, dropped, summary = filter_rows([row("same text"), row("same text\n\nextra")], settings, count_words)
    assert len(kept) == 1 and dropped[0]["drop_reason"] == "duplicate"
    assert summary == {"raw": 2, "kept": 1, "dropped": 1, "dropped_by_reason": {"duplicate": 1}, "settings": settings}
    assert kept[0]["full_prompt"] == "Do the task.\n\nsame text"
    kept, _, _ = filter_rows([row("same text"), row("same text")], {**settings, "deduplicate": False}, count_words)
    assert len(kept) == 2  # the released filter keeps duplicates


def test_characters_are_checked_before_the_cut():
    # pesudo_filter.py rejects `_` / `=` / CJK anywhere in the generation, then cuts at the blank line:
    # text that only the tail after the cut would have rejected is dropped, not kept
    got, kept, _ = reasons("x", ["a good input here\n\nthen x = y", "a good input here\n\n____ tail",
                                 "a good input here\n\n中文", "a fine input too\n\nclean tail"])
    assert got == ["contains '='", "contains '_'", "cjk"]
    assert [k["input"] for k in kept] == ["a fine input too"]


def test_task_rules_qa_qg_pe():
    got, kept, _ = reasons("qa", ["Context: x y z. Q: why is it so?", "Context: x y z only",
                                  "Question: what is it here?"])
    assert got == ["missing '\\nQuestion:'"]
    assert kept[0]["input"] == "Context: x y z. \nQuestion: why is it so?"
    assert kept[1]["input"] == "Question: what is it here?"  # the chain's leading newline, then stripped
    qg = settings_for_task("qg", {"min_tokens": 1}, {"min_tokens": 1})
    assert normalise("A passage about things. Question: what?", qg) == "A passage about things."
    assert normalise("A passage. Q: what? question: why", qg) == "A passage."
    assert normalise("A passage about question marks.", qg) == "A passage about question marks."  # no colon
    got, _, _ = reasons("pe", ["3, ['a', 'b', 'c', 'd']", "['a', 'b'] then 3", "-3, ['a', 'b', 'c']",
                               "3x, ['a', 'b', 'c']"])
    assert got == ["does not start with an integer field"] * 3  # str.isdigit(): no sign, digits only


def test_icl_filter_follows_ssr_parser():
    def seg(text, output, markers=1, instruction="Do the task."):
        return {"id": text[:6], "input": text, "output": output, "full_prompt": f"{instruction}\n\n{text}",
                "provenance": {"output_markers": markers}}

    rows = [seg("good input words", "yes"), seg("no output marker here", "", markers=0),
            seg("two markers here", "", markers=2), seg("  ", "yes"), seg("input with empty output", ""),
            seg("long " * 9, "yes"), seg("fine input", "w " * 6), seg("good input words", "yes")]
    settings = icl_settings({"max_instruction_input_tokens": 11, "max_tokens": 8, "max_output_tokens": 5})
    kept, dropped, summary = filter_icl_rows(rows, settings, count_words)
    assert [d["drop_reason"] for d in dropped] == [
        "not one 'Output:'", "not one 'Output:'", "empty input", "empty output",
        "instruction + input over 11 tokens", "output over 5 tokens"]
    assert [k["input"] for k in kept] == ["good input words", "good input words"]  # SSR keeps duplicates
    more, _, _ = filter_icl_rows(rows, {**settings, "save_more": True}, count_words)
    assert "no output marker here" in [k["input"] for k in more]  # SSR's own parser: save_more on
    assert "two markers here" not in [k["input"] for k in more]
    assert summary["settings"]["save_more"] is False


def test_user_task_threshold_overrides_paper_rule():
    assert settings_for_task("sa")["max_tokens"] == 200
    assert settings_for_task("sa", None, {"max_tokens": 150})["max_tokens"] == 150
    assert settings_for_task("sa", {"max_tokens": 999})["max_tokens"] == 200  # the task rule is more specific
