"""NI-format task data: read and validate JSON Lines rows (seeds, train, replay, eval).

Every row needs `id`, `input`, `output` and `full_prompt` (= instruction + "\\n\\n" + input).
Any defect fails with `file:line: reason`, so a user can open the file at the right place.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import SersError

REQUIRED_FIELDS = ("id", "input", "output", "full_prompt")
NON_EMPTY_FIELDS = ("input", "output", "full_prompt")
DEFAULT_MAX_LINE_BYTES = 1 << 20
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Row:
    id: str
    input: str
    output: str
    full_prompt: str

    @property
    def instruction(self) -> str:
        return split_instruction(self.full_prompt)[0]

    def to_dict(self) -> dict:
        return {"id": self.id, "input": self.input, "output": self.output, "full_prompt": self.full_prompt}


def split_instruction(full_prompt: str) -> tuple[str, str]:
    """The task instruction is everything before the first blank line (METHOD.md §1)."""
    instruction, _, rest = full_prompt.partition("\n\n")
    return instruction, rest


def check_task_name(name: str, where: str = "tasks") -> str:
    """Task names become file and folder names: refuse path characters outright."""
    if not isinstance(name, str) or not TASK_NAME.match(name) or ".." in name:
        raise SersError(f"config: {where}: task name {name!r} may only contain letters, digits, '_', '-', '.'"
                        " (no path separators or '..')")
    return name


def iter_json_objects(path: str | Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[str, dict]]:
    """(`file:line`, object) for every non-blank line of a JSON Lines file; SersError at the first
    line that is too long, not UTF-8, not JSON, or not an object."""
    path = Path(path)
    if not path.is_file():
        raise SersError(f"{path}: no such data file")
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        if len(line) > max_line_bytes:
            raise SersError(f"{where}: line is {len(line)} bytes, over the limit of {max_line_bytes} (data.max_line_bytes)")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SersError(f"{where}: not valid UTF-8 (byte {e.start}: {line[e.start:e.start + 1]!r})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise SersError(f"{where}: malformed JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise SersError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield where, obj


def read_rows(path: str | Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[Row]:
    """Read one NI JSON Lines file; raise SersError naming file:line for the first bad row."""
    rows: list[Row] = []
    seen: dict[str, str] = {}
    for where, obj in iter_json_objects(path, max_line_bytes):
        for field in REQUIRED_FIELDS:
            if field not in obj:
                raise SersError(f"{where}: missing field {field!r}")
            if not isinstance(obj[field], str):
                raise SersError(f"{where}: field {field!r} must be a string, got {type(obj[field]).__name__}")
        for field in NON_EMPTY_FIELDS:
            if not obj[field].strip():
                raise SersError(f"{where}: field {field!r} is empty")
        if obj["id"] in seen:
            raise SersError(f"{where}: duplicate id {obj['id']!r} (first on line {seen[obj['id']].rsplit(':', 1)[1]})")
        seen[obj["id"]] = where
        rows.append(Row(obj["id"], obj["input"], obj["output"], obj["full_prompt"]))
    if not rows:
        raise SersError(f"{path}:1: file has no rows")
    return rows
