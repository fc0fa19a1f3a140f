"""Atomic writes: whole files or nothing, and no temporary leftovers of a killed write."""
from __future__ import annotations

import tempfile

import pytest

from sers.io import atomic_path, write_json


def test_leftovers_of_a_killed_write_are_removed_when_the_artifact_is_next_written(tmp_path):
    final = tmp_path / "summary.json"
    # what a SIGKILL in the middle of two earlier writes leaves: a temp file and a temp folder
    _, stale_file = tempfile.mkstemp(prefix=".summary.json.", suffix=".tmp", dir=tmp_path)
    tempfile.mkdtemp(prefix=".summary.json.", suffix=".tmp", dir=tmp_path)
    others = [tmp_path / ".other.json.abcd1234.tmp", tmp_path / ".summary.json.notes", tmp_path / "user.tmp"]
    for path in others:
        path.write_text("keep")
    write_json(final, {"a": 1})
    assert final.read_text().strip().startswith("{")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["summary.json", *(p.name for p in others)]), left


def test_a_failed_write_leaves_neither_the_artifact_nor_a_temporary(tmp_path):
    final = tmp_path / "adapter"
    with pytest.raises(RuntimeError):
        with atomic_path(final, is_dir=True) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_artifacts_get_the_users_usual_permissions_not_the_private_temporary_ones(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        with atomic_path(tmp_path / "adapter", is_dir=True) as tmp:
            (tmp / "w").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "adapter").stat().st_mode) == 0o755
