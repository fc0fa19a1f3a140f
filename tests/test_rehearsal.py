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


def test_evolution_probe_hides_the_real_outputs_and_scores_the_changed_labels(monkeypatch):
    from sers import evolution

    labels = {"a": ("good film", "good film", False), "b": ("bad", "great film", True),  # changed, closer
              "c": ("nice film", "nice", True), "d": ("ok", "ok", True)}                  # changed farther; same

    def fake_label_rows(model, tok, rows, settings, *args):
        assert all("output" not in r for r in rows)  # the labelling never sees the real outputs
        return [{"theta_t_label": labels[r["id"]][0], "output": labels[r["id"]][1], "evolved": labels[r["id"]][2],
                 "theta0_label": ""} for r in rows]

    monkeypatch.setattr(evolution, "label_rows", fake_label_rows)
    rows = [{"id": k, "full_prompt": "p\n\nx", "input": "x", "output": "great film"} for k in "abcd"]
    probe = evolution.probe_against_references(None, None, rows, evolution.EvolutionSettings(), "plain")
    assert (probe["n_rows"], probe["n_evolved"], probe["n_changed"]) == (4, 3, 2)
    assert (probe["n_closer"], probe["n_farther"]) == (1, 1)
    by_id = {r["id"]: r for r in probe["rows"]}
    assert by_id["b"]["rouge_theta_t"] == 0 and by_id["b"]["rouge_label"] == 100
    assert by_id["c"]["rouge_label"] == 0 and by_id["c"]["rouge_theta_t"] == 50  # "nice film" vs "great film"
    assert probe["diff_changed"] == (100 - 0 + 0 - 50) / 2
