"""Which rows a stage trains on: its task's training rows plus the rehearsal rows of earlier tasks.

`is_replay` is set from the file a row came from, never from its position. A rehearsal row whose
label is empty (θt answered nothing) cannot be trained on: it is left out, and counted, never
dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .data import Row, read_rows
from .io import read_jsonl
from .sampling import subsample


def task_rows(path: str, max_rows: int, seed: int, max_line_bytes: int) -> list[Row]:
    """A task's rows: all (max_rows 0) or a seeded sample, stratified by output for label-like tasks."""
    return subsample(read_rows(path, max_line_bytes), max_rows, seed)


@dataclass
class RehearsalSet:
    rows: list[dict]  # labelled rows (full_prompt, output) of every set, in order
    empty_labels: dict[str, list[str]] = field(default_factory=dict)  # path -> ids left out

    @property
    def n_empty(self) -> int:
        return sum(len(v) for v in self.empty_labels.values())


def has_label(row: dict) -> bool:
    return bool(str(row.get("output", "")).strip())


def rehearsal_rows(paths: list[str]) -> RehearsalSet:
    """The labelled rehearsal rows of the given sets; rows with an empty label are left out and listed."""
    result = RehearsalSet([])
    for path in paths:
        for r in read_jsonl(path):
            if has_label(r):
                result.rows.append(r)
            else:
                result.empty_labels.setdefault(path, []).append(str(r.get("id")))
    return result
