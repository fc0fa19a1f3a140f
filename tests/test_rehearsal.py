"""Rehearsal rows with an empty label are left out of training, counted and listed — never silently."""
from __future__ import annotations

import json

from sers.evolution import rehearsal_summary
from sers.rehearsal import rehearsal_rows


def test_empty_labels_are_counted_not_silently_dropped(tmp_path):
    rows = [{"id": "a", "full_prompt": "p\n\nx", "output": "positive", "evolved": True},
            {"id": "b", "full_prompt": "p\n\ny", "output": "  ", "evolved": False},
            {"id": "c", "full_prompt": "p\n\nz", "output": "negative", "evolved": False},
            {"id": "d", "full_prompt": "p\n\nw", "output": "positive", "evolved": False}]
    path = tmp_path / "rehearsal.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = rehearsal_rows([str(path)])
    assert [r["id"] for r in result.rows] == ["a", "c", "d"]
    assert result.n_empty == 1 and result.empty_labels == {str(path): ["b"]}
    summary = rehearsal_summary(rows)
    assert summary["n_rows"] == 4 and summary["n_evolved"] == 1
    assert summary["n_empty_label"] == 1 and summary["empty_label_ids"] == ["b"]
    assert summary["label_counts"] == {"positive": 2, "negative": 1}


def test_released_hardness_takes_the_first_rows_in_file_order():
    """The released code ranks by ROUGE-L against the row's existing label, empty for masked inputs: every
    score ties and the first round(se_ratio·N) rows of the selected file — k-means cluster order — are
    re-decoded (selection writes that order, tests/test_selection.py)."""
    from sers.evolution import hardest, hardness_scores
    from sers.generation import Generated

    tuned = [Generated(token_ids=[1], text=t, logprob_sum=-1.0) for t in "bacdefghij"]
    scores = hardness_scores("released", tuned, None, [""] * 10)
    assert hardest(scores, 0.2) == [0, 1]
