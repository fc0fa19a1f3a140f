"""Every sub-sample of rows is seeded and stratified by output for label-like tasks (never a file prefix)."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from sers.data import Row, read_rows
from sers.evaluation import eval_sample
from sers.rehearsal import task_rows
from sers.sampling import proportional_quotas, subsample, subsample_indices
from sers.synthesis import SynthesisSettings, icl_pairs, plan_jobs


def label_sorted_rows(n_neg: int = 10, n_pos: int = 10) -> list[Row]:
    """Like an NI seed file: every negative row, then every positive one."""
    labels = ["negative"] * n_neg + ["positive"] * n_pos
    return [Row(f"r{i:03d}", f"review number {i} is a fine text", lab, f"Classify.\n\nreview number {i} is a fine text")
            for i, lab in enumerate(labels)]


def write_rows(path, rows: list[Row]) -> str:
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("n,expected", [(6, {"negative": 3, "positive": 3}), (8, {"negative": 4, "positive": 4}),
                                        (5, {"negative": 3, "positive": 2})])
def test_label_sorted_rows_give_a_stratified_sample_for_every_seed(n, expected):
    rows = label_sorted_rows()
    for seed in range(20):
        chosen = subsample(rows, n, seed)
        assert dict(Counter(r.output for r in chosen)) == expected, seed
        assert [r.id for r in chosen] == sorted(r.id for r in chosen)  # file order kept
    assert subsample(rows, 6, 1) == subsample(rows, 6, 1)  # seeded
    assert {tuple(r.id for r in subsample(rows, 6, s)) for s in range(10)} != {("r000",)}  # not one fixed set


def test_unequal_classes_are_sampled_in_proportion():
    rows = label_sorted_rows(46, 54)  # sa.eval of the shipped sample: 54 positive, 46 negative
    assert Counter(r.output for r in subsample(rows, 60, 3)) == {"positive": 32, "negative": 28}
    assert proportional_quotas({"a": 46, "b": 54}, 60) == {"a": 28, "b": 32}
    assert sum(proportional_quotas({"a": 1, "b": 1, "c": 1}, 2).values()) == 2


def test_free_text_outputs_are_sampled_uniformly_not_as_a_prefix():
    keys = [f"answer {i}" for i in range(40)]  # 40 distinct outputs: no label set
    samples = [subsample_indices(keys, 5, s) for s in range(10)]
    assert all(len(set(s)) == 5 and s == sorted(s) for s in samples)
    assert any(s != [0, 1, 2, 3, 4] for s in samples) and len({tuple(s) for s in samples}) > 5
    assert subsample_indices(keys, 0, 1) == list(range(40)) and subsample_indices(keys, 99, 1) == list(range(40))


def test_synthesis_seeds_come_from_both_classes():
    jobs = plan_jobs(label_sorted_rows(), SynthesisSettings(max_seeds=6, max_examples=2), seed=11)
    seeds = {j.seed.id: j.seed.output for j in jobs}
    assert Counter(seeds.values()) == {"negative": 3, "positive": 3}


def test_icl_pairs_cover_every_label_pair():
    pairs = icl_pairs(label_sorted_rows(), 8, seed=5)
    assert Counter((a.output, b.output) for a, b in pairs) == {
        ("negative", "negative"): 2, ("negative", "positive"): 2, ("positive", "negative"): 2,
        ("positive", "positive"): 2}
    assert all(a.id != b.id for a, b in pairs)
    assert len(icl_pairs(label_sorted_rows(3, 3), 0, seed=5)) == 6 * 5  # 0 = every ordered pair


def test_train_replay_and_eval_rows_are_stratified(tmp_path):
    path = write_rows(tmp_path / "sa.train.json", label_sorted_rows(50, 50))
    assert Counter(r.output for r in task_rows(path, 16, 7, 1 << 20)) == {"negative": 8, "positive": 8}
    rows = read_rows(path)
    assert Counter(r.output for r in eval_sample(rows, 24, 7)) == {"negative": 12, "positive": 12}
    assert eval_sample(rows, 0, 7) == rows
