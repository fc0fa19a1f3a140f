"""Rule-based filtering of raw pseudo inputs (METHOD.md §2).

Thresholds are per task: `settings_for_task` layers the schema defaults, the user's
`filter.defaults`, the paper's per-task rules (`PAPER_TASK_RULES`) and the user's
`filter.tasks[task]`, in that order. Every dropped row keeps the reason it was dropped.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable

GLOBAL_DEFAULTS = {
    "min_tokens": 20, "max_tokens": 800, "max_embed_tokens": 510, "forbidden_chars": "_=", "drop_cjk": True,
    "normalize_question_marker": False, "require_substring": None, "require_regex": None,
    "cut_before_regex": None, "cut_markers": ["\n\n", "###"], "require_output": False,
}
# The released code's per-task rules, by NI-c012 category name.
PAPER_TASK_RULES = {
    "qa": {"normalize_question_marker": True, "require_substring": "Question:"},
    "qg": {"cut_before_regex": r"(?i)\bquestion\s*:", "min_tokens": 100},
    "pe": {"require_regex": r"-?\d+"},
    "sa": {"max_tokens": 200},
    "trans": {"max_tokens": 80},
    "sum": {"min_tokens": 100},
    "dsg": {"min_tokens": 100},
    "expl": {"min_tokens": 80},
}
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
QUESTION_MARKER = re.compile(r"(?m)(^|\s)(?:Q:|question:|QUESTION:)")


def settings_for_task(task: str, user_defaults: dict | None = None, user_task: dict | None = None) -> dict:
    merged = dict(GLOBAL_DEFAULTS)
    merged.update(user_defaults or {})
    merged.update(PAPER_TASK_RULES.get(task, {}))
    merged.update(user_task or {})
    return merged


def normalise(text: str, settings: dict) -> str:
    """Cut and normalise a raw input before it is judged."""
    for marker in settings["cut_markers"]:
        text = text.split(marker, 1)[0]
    if settings["cut_before_regex"]:
        m = re.search(settings["cut_before_regex"], text)
        if m:
            text = text[: m.start()]
    if settings["normalize_question_marker"]:
        text = QUESTION_MARKER.sub(lambda m: f"{m.group(1)}Question:", text)
    return text.strip()


def drop_reason(text: str, settings: dict, count_tokens: Callable[[str], int],
                count_embed_tokens: Callable[[str], int] | None) -> str | None:
    """Why a (normalised) input fails, or None if it passes. The first failing rule names it."""
    if not text:
        return "empty"
    if settings["drop_cjk"] and CJK.search(text):
        return "cjk"
    bad = [c for c in settings["forbidden_chars"] if c in text]
    if bad:
        return f"contains {bad[0]!r}"
    if settings["require_substring"] and settings["require_substring"] not in text:
        return f"missing {settings['require_substring']!r}"
    if settings["require_regex"] and not re.match(settings["require_regex"], text):
        return f"does not start with /{settings['require_regex']}/"
    n = count_tokens(text)
    if n < settings["min_tokens"]:
        return f"under {settings['min_tokens']} tokens"
    if n > settings["max_tokens"]:
        return f"over {settings['max_tokens']} tokens"
    if count_embed_tokens is not None and count_embed_tokens(text) > settings["max_embed_tokens"]:
        return f"over {settings['max_embed_tokens']} embedding tokens"
    return None


def filter_rows(rows: list[dict], settings: dict, count_tokens: Callable[[str], int],
                count_embed_tokens: Callable[[str], int] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Split raw rows into (kept, dropped-with-reason, summary counts); exact duplicates dropped."""
    kept, dropped, seen = [], [], set()
    for row in rows:
        text = normalise(row["input"], settings)
        reason = drop_reason(text, settings, count_tokens, count_embed_tokens)
        if reason is None and settings["require_output"] and "output" in row and not str(row["output"]).strip():
            reason = "no output"  # an ICL (SSR) row whose output could not be parsed
        if reason is None and text in seen:
            reason = "duplicate"
        if reason is not None:
            dropped.append({**row, "drop_reason": reason})
            continue
        seen.add(text)
        instruction = row["full_prompt"].split("\n\n", 1)[0]
        kept.append({**row, "input": text, "full_prompt": f"{instruction}\n\n{text}"})
    reasons = Counter(d["drop_reason"] for d in dropped)
    summary = {"raw": len(rows), "kept": len(kept), "dropped": len(dropped),
               "dropped_by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])), "settings": settings}
    return kept, dropped, summary
