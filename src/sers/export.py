"""LLaMA-Factory interop: export rehearsal sets as alpaca-format datasets plus a dataset_info.json."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from sers.data import iter_json_objects, split_instruction
from sers.errors import SersError
from sers.io import write_json

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _field(obj: dict, keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if key in obj:
            if not isinstance(obj[key], str):
                raise SersError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
            return obj[key]
    raise SersError(f"{where}: missing field {' or '.join(map(repr, keys))}")


def to_alpaca_row(obj: Mapping[str, Any], where: str, split_prompt: bool = True) -> dict[str, str]:
    """One rehearsal row -> {"instruction", "input", "output"} (see `write_dataset_info` for the row format)."""
    obj = dict(obj)
    output = _field(obj, ("output", "label"), where)
    if "instruction" in obj:
        query = _field(obj, ("input",), where) if "input" in obj else ""
        return {"instruction": _field(obj, ("instruction",), where), "input": query, "output": output}
    full_prompt = _field(obj, ("full_prompt",), where)
    if split_prompt:
        instruction, query = split_instruction(full_prompt)
    else:
        instruction, query = full_prompt, ""
    return {"instruction": instruction, "input": query, "output": output}


def read_rehearsal(path: str | os.PathLike, split_prompt: bool = True) -> list[dict[str, str]]:
    """Read a rehearsal JSON Lines file as alpaca rows; SersError names file:line of a bad row."""
    return [to_alpaca_row(obj, where, split_prompt=split_prompt) for where, obj in iter_json_objects(path)]


def write_dataset_info(rehearsal_files: Mapping[str, str | os.PathLike], out_path: str | os.PathLike,
                       split_prompt: bool = True) -> dict[str, dict[str, Any]]:
    """Write `<name>.json` (alpaca JSON array) per dataset next to `out_path`, then `out_path` registering them.

    `rehearsal_files` maps a dataset name (letters, digits, '_', '-', '.') to a JSON Lines file.
    Each row has "full_prompt" (instruction + "\\n\\n" + input, split at the first blank line)
    and "output" (or "label"); a row that already has "instruction" (and optionally "input")
    is used as is. LLaMA-Factory joins instruction and input with a single "\\n", so with
    split_prompt=False the whole full_prompt goes to "instruction" and "input" is "" to keep the
    prompt byte-identical. LLaMA-Factory looks for the file named dataset_info.json in its
    dataset_dir, so `out_path` normally ends in that name. Returns the dataset_info mapping.
    """
    out = Path(out_path)
    info: dict[str, dict[str, Any]] = {}
    datasets: dict[str, list[dict[str, str]]] = {}
    for name, src in rehearsal_files.items():
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
            raise SersError(f"{out}: dataset name {name!r} may only contain letters, digits, '_', '-', '.'")
        file_name = f"{name}.json"
        if file_name == out.name:
            raise SersError(f"{out}: dataset name {name!r} would overwrite the dataset_info file itself")
        datasets[file_name] = read_rehearsal(src, split_prompt=split_prompt)
        info[name] = {"file_name": file_name, "formatting": "alpaca", "columns": dict(ALPACA_COLUMNS)}
    for file_name, rows in datasets.items():
        write_json(out.parent / file_name, rows)
    # Registered last, so a dataset_info.json never names a file that is not there yet.
    write_json(out, info)
    return info
