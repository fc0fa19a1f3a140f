import json

import pytest

from sers.errors import SersError
from sers.export import write_dataset_info
from sers.io import write_jsonl


def rehearsal(tmp_path):
    a = tmp_path / "in" / "a.jsonl"
    b = tmp_path / "in" / "b.jsonl"
    write_jsonl(a, [
        {"id": "1", "full_prompt": "Translate to Spanish.\n\nThe cat is here.\n\nThanks", "input": "The cat is here.",
         "output": "El gato está aquí.", "is_replay": True},
        {"id": "2", "full_prompt": "Translate to Spanish.\n\nHello", "input": "Hello", "label": "Hola"},
    ])
    write_jsonl(b, [{"instruction": "Classify.", "input": "good", "output": "positive"}])
    return {"sers_order1_sa": str(a), "sers_order1_pe": str(b)}


def test_dataset_info_loads_and_files_exist(tmp_path):
    out = tmp_path / "lf" / "dataset_info.json"
    write_dataset_info(rehearsal(tmp_path), out)
    info = json.loads(out.read_text(encoding="utf-8"))
    assert set(info) == {"sers_order1_sa", "sers_order1_pe"}
    for name, entry in info.items():
        assert entry["formatting"] == "alpaca"
        assert entry["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}
        rows = json.loads((out.parent / entry["file_name"]).read_text(encoding="utf-8"))
        assert isinstance(rows, list) and rows
        for row in rows:
            assert set(row) == {"instruction", "input", "output"}
    sa = json.loads((out.parent / info["sers_order1_sa"]["file_name"]).read_text(encoding="utf-8"))
    # split at the first blank line only; non-ASCII kept; "label" accepted for the output
    assert sa[0] == {"instruction": "Translate to Spanish.", "input": "The cat is here.\n\nThanks",
                     "output": "El gato está aquí."}
    assert sa[1]["output"] == "Hola"
    assert "está" in (out.parent / "sers_order1_sa.json").read_text(encoding="utf-8")


def test_unsplit_prompt(tmp_path):
    out = tmp_path / "dataset_info.json"
    write_dataset_info(rehearsal(tmp_path), out, split_prompt=False)
    rows = json.loads((tmp_path / "sers_order1_sa.json").read_text(encoding="utf-8"))
    assert rows[1] == {"instruction": "Translate to Spanish.\n\nHello", "input": "", "output": "Hola"}


def test_bad_row_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"full_prompt": "x\n\ny", "output": "z"}, {"full_prompt": "x\n\ny"}])
    with pytest.raises(SersError, match=r"bad.jsonl:2: missing field 'output' or 'label'"):
        write_dataset_info({"d": str(bad)}, tmp_path / "out" / "dataset_info.json")
    assert not (tmp_path / "out" / "dataset_info.json").exists()


def test_bad_name(tmp_path):
    with pytest.raises(SersError, match="dataset name"):
        write_dataset_info({"../evil": "x.jsonl"}, tmp_path / "dataset_info.json")
