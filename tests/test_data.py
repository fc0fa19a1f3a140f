import json

import pytest

from sers.data import read_rows
from sers.errors import SersError

GOOD = {"id": "a", "input": "x", "output": "y", "full_prompt": "Do it.\n\nx"}


def write(tmp_path, content: bytes):
    p = tmp_path / "sa.train.smp001.json"
    p.write_bytes(content)
    return p


def line(**over):
    return (json.dumps({**GOOD, **over}) + "\n").encode()


@pytest.mark.parametrize("content,lineno,reason", [
    (line() + b"{not json\n", 2, "malformed JSON"),
    (line() + line(id="b").replace(b'"output": "y", ', b""), 2, "missing field 'output'"),
    (b"", 1, "file has no rows"),
    (line() + b'{"id": "b", "input": "caf\xe9"}\n', 2, "not valid UTF-8"),
    (line() + line(), 2, "duplicate id 'a' (first on line 1)"),
    (line(id="b", input=3), 1, "field 'input' must be a string"),
    (line(output="  "), 1, "field 'output' is empty"),
    (b"[1, 2]\n", 1, "expected a JSON object"),
])
def test_bad_rows_fail_with_file_and_line(tmp_path, content, lineno, reason):
    path = write(tmp_path, content)
    with pytest.raises(SersError) as e:
        read_rows(path)
    assert str(e.value).startswith(f"{path}:{lineno}: ")
    assert reason in str(e.value)


def test_line_size_limit(tmp_path):
    path = write(tmp_path, line(input="x" * 500))
    with pytest.raises(SersError, match=r":1: line is \d+ bytes, over the limit of 100"):
        read_rows(path, max_line_bytes=100)


def test_good_rows_and_instruction(tmp_path):
    rows = read_rows(write(tmp_path, line() + b"\n" + line(id="b")))
    assert [r.id for r in rows] == ["a", "b"] and rows[0].instruction == "Do it."


def test_shipped_sample_is_valid():
    from conftest import REPO

    files = sorted((REPO / "data" / "ni-c012-sample").glob("*.json"))
    assert len(files) == 50  # 10 tasks × seeds, train, replay, eval and the spare (validation) rows
    for f in files:
        assert read_rows(f)
