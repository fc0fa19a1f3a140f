"""Which rows a stage trains on: its task's training rows plus the rehearsal rows of earlier tasks.

`is_replay` is set from the file a row came from, never from its position.
"""
from __future__ import annotations

import random

from .data import Row, read_rows
from .io import read_jsonl


def sample(rows: list, n: int, seed: int) -> list:
    """A seeded random subset of n rows in file order (all rows when n is 0 or ≥ len)."""
    if not n or n >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def task_rows(path: str, max_rows: int, seed: int, max_line_bytes: int) -> list[Row]:
    return sample(read_rows(path, max_line_bytes), max_rows, seed)


def rehearsal_rows(paths: list[str]) -> list[dict]:
    """Labelled rehearsal rows (full_prompt, output) of the given sets, in order."""
    rows = []
    for path in paths:
        rows.extend(r for r in read_jsonl(path) if str(r.get("output", "")).strip())
    return rows
