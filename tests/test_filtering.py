from sers.filtering import filter_rows, normalise, settings_for_task


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
    assert normalise("first ### second", settings) == "first"
    kept, dropped, summary = filter_rows([row("same text"), row("same text\n\nextra")], settings, count_words)
    assert len(kept) == 1 and dropped[0]["drop_reason"] == "duplicate"
    assert summary == {"raw": 2, "kept": 1, "dropped": 1, "dropped_by_reason": {"duplicate": 1}, "settings": settings}
    assert kept[0]["full_prompt"] == "Do the task.\n\nsame text"


def test_task_rules_qa_qg_pe():
    got, kept, _ = reasons("qa", ["Context: x y z. Q: why is it so?", "Context: x y z only"])
    assert got == ["missing 'Question:'"] and "Question: why" in kept[0]["input"]
    qg = settings_for_task("qg", {"min_tokens": 1}, {"min_tokens": 1})
    assert normalise("A passage about things. Question: what?", qg) == "A passage about things."
    got, _, _ = reasons("pe", ["3, ['a', 'b', 'c', 'd']", "['a', 'b'] then 3"])
    assert got == ["does not start with /-?\\d+/"]


def test_user_task_threshold_overrides_paper_rule():
    assert settings_for_task("sa")["max_tokens"] == 200
    assert settings_for_task("sa", None, {"max_tokens": 150})["max_tokens"] == 150
    assert settings_for_task("sa", {"max_tokens": 999})["max_tokens"] == 200  # the task rule is more specific


def test_icl_row_without_output_is_dropped_when_required():
    settings = settings_for_task("x", {"min_tokens": 1, "require_output": True})
    kept, dropped, _ = filter_rows([row("an input text", output=" "), row("other input", output="yes")], settings,
                                   count_words)
    assert dropped[0]["drop_reason"] == "no output" and kept[0]["output"] == "yes"
