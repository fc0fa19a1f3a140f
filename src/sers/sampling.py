"""Seeded sub-samples of rows, stratified by output where a task's outputs come from a small label set.

NI files are sorted by label (`sa` seeds: 10 negative, then 10 positive), so a file prefix is one
class. Every sub-sample in the workflow — synthesis seeds, SSR's ICL pairs, training, replay and
evaluation rows — goes through `subsample`: when the outputs take at most `MAX_LABELS` distinct
values it allocates the sample to each label in proportion to the label's share of the file
(largest remainders, ties to the first label in file order) and draws each label's rows at random;
otherwise it draws uniformly at random. Rows come back in file order.
"""
from __future__ import annotations

import random
from typing import Callable, Hashable, Sequence, TypeVar

T = TypeVar("T")
MAX_LABELS = 10  # at most this many distinct outputs in the file = a classification-like task


def output_of(row) -> str:
    """A row's output: a `Row` attribute or a dict key."""
    return row.output if hasattr(row, "output") else str(row.get("output", ""))


def has_small_label_set(labels: Sequence[Hashable], max_labels: int = MAX_LABELS) -> bool:
    return 0 < len(set(labels)) <= max_labels


def proportional_quotas(counts: dict, n: int) -> dict:
    """How many of n to draw from each stratum: proportional, by largest remainder (sum = n)."""
    total = sum(counts.values())
    exact = {k: n * c / total for k, c in counts.items()}
    quotas = {k: int(v) for k, v in exact.items()}
    order = list(counts)  # insertion order = first appearance in the file
    by_remainder = sorted(order, key=lambda k: (-(exact[k] - quotas[k]), order.index(k)))
    for k in by_remainder[: n - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def subsample_indices(keys: Sequence[Hashable], n: int, seed: int, stratify: bool | None = None,
                      max_labels: int = MAX_LABELS) -> list[int]:
    """Sorted indices of a seeded sample of n items (all items when n is 0 or ≥ len).

    `keys` are the items' labels. `stratify=None` stratifies when the keys take at most `max_labels`
    distinct values; True or False forces the choice (e.g. pairs of seeds, stratified by their label
    pair because the seeds' own labels form a small set).
    """
    if not n or n >= len(keys):
        return list(range(len(keys)))
    rng = random.Random(seed)
    if stratify is None:
        stratify = has_small_label_set(keys, max_labels)
    if not stratify:
        return sorted(rng.sample(range(len(keys)), n))
    members: dict = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    quotas = proportional_quotas({k: len(v) for k, v in members.items()}, n)
    chosen: list[int] = []
    for k, idx in members.items():
        chosen += rng.sample(idx, quotas[k])
    return sorted(chosen)


def subsample(rows: Sequence[T], n: int, seed: int, label: Callable[[T], Hashable] = output_of,
              stratify: bool | None = None, max_labels: int = MAX_LABELS) -> list[T]:
    """A seeded sample of n rows in file order, stratified by `label` where the labels form a small set."""
    keys = [label(r) for r in rows]
    return [rows[i] for i in subsample_indices(keys, n, seed, stratify, max_labels)]
