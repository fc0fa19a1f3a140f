"""Bad input, interrupted runs, determinism and safe loading (the "what can go wrong" catalogue)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sers.errors import SersError

from _tiny import tiny_model_dir  # noqa: F401  (fixture)
from conftest import REPO, Workflow

TINY = ("--configfile", "config/tiny.yaml")


def results_files(wf: Workflow) -> list[str]:
    root = wf.root / "results"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def failed(wf: Workflow, *args: str) -> str:
    proc = wf.snakemake(*args, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    return proc.stdout + proc.stderr


# ---- bad input: one clear message naming file:line or the config key, non-zero exit, no artifact ----

# Through the workflow: that a config error stops Snakemake at start-up with the library's message. Every
# key's own message is a unit test (test_config.py); these two cover the schema and the data check.
@pytest.mark.parametrize("override,message", [
    ({"selection": {"memory": -5}}, "config: selection.memory: -5 is less than the minimum of 1"),
    ({"tasks": ["nosuch"], "orders": {"order1": ["nosuch", "sa"]}}, "task 'nosuch' is unknown to data.dir"),
])
def test_bad_config_fails_at_start_up_naming_the_key(workflow_dir, override, message):
    workflow_dir.write_config("bad.yaml", override)
    out = failed(workflow_dir, "-n", *TINY, "bad.yaml")
    assert message in out
    assert results_files(workflow_dir) == []


def corrupt_data(wf: Workflow, name: str, content: bytes) -> str:
    data = wf.root / "mydata"
    shutil.copytree(REPO / "data/ni-c012-sample", data)
    (data / name).write_bytes(content)
    return wf.write_config("mydata.yaml", {"data": {"dir": "mydata"}})


GOOD_LINE = (REPO / "data/ni-c012-sample/sa.train.smp001.json").read_bytes().splitlines(keepends=True)[0]


# Through the workflow: that a job reading a bad seed file fails naming file:line and leaves nothing. Every
# kind of bad row is a unit test of the reader (test_data.py); the line limit also shows that
# data.max_line_bytes reaches the job.
@pytest.mark.parametrize("content,where", [
    (GOOD_LINE + b"{broken json\n", ":2: malformed JSON"),
    (GOOD_LINE + b'{"id": "big", "input": "' + b"x" * 3000 + b'", "output": "y", "full_prompt": "p"}\n',
     ":2: line is 3"),
])
def test_bad_seed_file_fails_with_file_and_line_and_leaves_no_artifact(workflow_dir, content, where):
    cfg = corrupt_data(workflow_dir, "sa.train.smp001.json", content)
    workflow_dir.write_config("limit.yaml", {"data": {"max_line_bytes": 2000}})
    target = "results/tiny/pseudo/mask/sa/raw.jsonl"
    out = failed(workflow_dir, target, *TINY, cfg, "limit.yaml")
    assert re.search(r"mydata/sa\.train\.smp001\.json" + re.escape(where), out), out[-3000:]
    assert not (workflow_dir.root / target).exists()
    assert not list((workflow_dir.root / "results/tiny/pseudo").rglob("*.jsonl"))


def test_missing_model_path_fails_clearly(workflow_dir):
    workflow_dir.write_config("model.yaml", {"model": {"source": "path", "path": str(workflow_dir.root / "nope")}})
    target = "results/tiny/pseudo/mask/sa/raw.jsonl"
    out = failed(workflow_dir, target, *TINY, "model.yaml")
    assert f"model.path: {workflow_dir.root / 'nope'} does not exist" in out
    assert not (workflow_dir.root / target).exists()


def test_lora_targets_absent_from_the_model(tiny_model_dir):
    from sers.models import load_model, lora_target_modules

    model = load_model(str(tiny_model_dir))
    assert lora_target_modules(model, "auto") == ["q_proj", "v_proj"]
    with pytest.raises(SersError, match=r"training.target_modules: \['query_key_value'\] not found in the model"):
        lora_target_modules(model, ["query_key_value"])


# ---- safe loading ----

def test_weights_load_only_from_safetensors(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from sers.models import load_model

    unsafe = tmp_path / "pickled"
    unsafe.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, unsafe)
    # the same weights as a pickle (transformers 5 itself no longer writes .bin files)
    torch.save(load_file(str(Path(tiny_model_dir) / "model.safetensors")), unsafe / "pytorch_model.bin")
    with pytest.raises(Exception, match="safetensors|model.safetensors|no file named"):
        load_model(str(unsafe))
    assert load_model(str(tiny_model_dir)) is not None


def test_no_unsafe_loading_in_the_code():
    code = {p: p.read_text() for d in ("src", "workflow", "rules") for p in (REPO / d).rglob("*")
            if p.suffix in (".py", ".smk")}
    code[REPO / "Snakefile"] = (REPO / "Snakefile").read_text()
    for path, text in code.items():
        assert "torch.load(" not in text, path
        assert "pickle" not in text.replace("allow_pickle=False", ""), path
        assert "trust_remote_code=True" not in text, path
        assert not re.search(r"yaml\.load\(", text), path
        assert not re.search(r"^\s*shell:", text, re.MULTILINE), f"{path}: no shell: rules (config never reaches a shell)"


