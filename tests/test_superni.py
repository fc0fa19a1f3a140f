"""Building task data from a Super-NaturalInstructions checkout (hand-made task files in its format)."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sers.data import read_rows, split_instruction
from sers.errors import SersError
from sers.io import read_jsonl
from sers.superni import DEFAULT_TASKS, FILES, Sizes, build, join_definition, main, parse_task_specs

from conftest import REPO, Workflow

SMALL = Sizes(train=24, eval=8, extra=4, smp01=12, smp005=8, smp001=4)
SA_DEF = "In this task, you are given a review. Classify it as negative or positive."
PE_DEF = "In this task, you are given inputs i and A. List all the elements of A after the first i elements."


def write_task(root: Path, name: str, instances: list[dict], definition: list[str] | None = None,
               **extra) -> Path:
    """A task file as in allenai/natural-instructions: tasks/<name>.json."""
    obj = {"Contributors": ["test"], "Source": ["handmade"], "Categories": ["Test"],
           "Definition": definition or [f"Definition of {name}."],
           "Positive Examples": [{"input": "x", "output": "y", "explanation": "z"}],
           "Negative Examples": [], "Instances": instances, **extra}
    path = root / "tasks" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4), encoding="utf-8")
    return path


def sa_instances(n: int = 60) -> list[dict]:
    # Two labels, balanced, the source sorted by label (as NI eval files are); a second reference
    # output on every instance that must never be taken.
    return [{"id": f"task1312-{i:04d}", "input": f"Review number {i}: " + ("great" if i < n // 2 else "awful"),
             "output": ["positive" if i < n // 2 else "negative", "IGNORED"]} for i in range(n)]


def pe_instances(n: int = 60) -> list[dict]:
    out = []
    for j in range(n):
        items = [str(7 * j + k) for k in range(3 + j % 4)]
        out.append({"id": f"task064-{j:04d}", "input": f"{1 + j % 2}, {items!r}",
                    "output": [", ".join(items[1 + j % 2:])]})
    return out


@pytest.fixture
def superni(tmp_path) -> Path:
    root = tmp_path / "natural-instructions"
    write_task(root, "task1312_amazonreview_polarity_classification", sa_instances(), [SA_DEF])
    write_task(root, "task064_all_elements_except_first_i", pe_instances(), [PE_DEF])
    return root


TWO = {"sa": "task1312_amazonreview_polarity_classification", "pe": "task064_all_elements_except_first_i"}


def ids(path: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(path)]


def test_rows_have_the_project_format(superni, tmp_path):
    out = tmp_path / "out"
    build(superni, out, TWO, seed=1, sizes=SMALL)
    names = {FILES[s].format(task=t) for s in FILES for t in TWO} | {"provenance.json", "PROVENANCE.md"}
    assert {p.name for p in out.iterdir()} == names
    source = {x["id"]: x for x in sa_instances()}
    for split in FILES:
        rows = read_jsonl(out / FILES[split].format(task="sa"))
        for r in rows:
            assert list(r) == ["id", "input", "output", "full_prompt", "task_name"]
            assert r["task_name"] == "task1312_amazonreview_polarity_classification"
            assert r["input"] == source[r["id"]]["input"]
            assert r["output"] == source[r["id"]]["output"][0] != "IGNORED"
            assert r["full_prompt"] == SA_DEF + "\n\n" + r["input"]
            assert split_instruction(r["full_prompt"]) == (SA_DEF, r["input"])
        # The project's own reader accepts every file.
        assert len(read_rows(out / FILES[split].format(task="sa"))) == len(rows)
    pe = read_jsonl(out / "pe.train.json")
    assert pe[0]["full_prompt"].startswith(PE_DEF + "\n\n")
    assert all(r["task_name"] == "task064_all_elements_except_first_i" for r in pe)


def test_split_sizes_disjointness_and_nesting(superni, tmp_path):
    out = tmp_path / "out"
    build(superni, out, TWO, seed=3, sizes=SMALL)
    for task in TWO:
        got = {s: ids(out / FILES[s].format(task=task)) for s in FILES}
        assert {s: len(v) for s, v in got.items()} == {"train": 24, "eval": 8, "extra": 4, "smp01": 12,
                                                       "smp005": 8, "smp001": 4}
        assert all(len(set(v)) == len(v) for v in got.values())
        train, ev, extra = set(got["train"]), set(got["eval"]), set(got["extra"])
        assert not train & ev and not train & extra and not ev & extra
        assert set(got["smp001"]) <= set(got["smp005"]) <= set(got["smp01"]) <= train


def test_label_splits_are_stratified_and_shuffled(superni, tmp_path):
    out = tmp_path / "out"
    build(superni, out, TWO, seed=5, sizes=SMALL)
    for split, n in (("eval", 8), ("train", 24), ("smp01", 12), ("smp005", 8), ("smp001", 4)):
        labels = [r["output"] for r in read_jsonl(out / FILES[split].format(task="sa"))]
        assert Counter(labels) == {"positive": n // 2, "negative": n // 2}, split
    train = [r["output"] for r in read_jsonl(out / "sa.train.json")]
    # Shuffled, not in the source's label-sorted order.
    assert train != sorted(train) and train != sorted(train, reverse=True)


def test_same_seed_same_files_other_seed_other_split(superni, tmp_path):
    build(superni, tmp_path / "a", TWO, seed=7, sizes=SMALL)
    build(superni, tmp_path / "b", TWO, seed=7, sizes=SMALL)
    build(superni, tmp_path / "c", TWO, seed=8, sizes=SMALL)
    for task in TWO:
        for split in FILES:
            name = FILES[split].format(task=task)
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert set(ids(tmp_path / "a" / f"{task}.eval.json")) != set(ids(tmp_path / "c" / f"{task}.eval.json"))
        assert ids(tmp_path / "a" / f"{task}.train.json") != ids(tmp_path / "c" / f"{task}.train.json")


def test_split_follows_the_superni_task_not_our_name(superni, tmp_path):
    build(superni, tmp_path / "a", {"sa": TWO["sa"]}, seed=7, sizes=SMALL)
    build(superni, tmp_path / "b", {"polarity": TWO["sa"]}, seed=7, sizes=SMALL)
    assert ids(tmp_path / "a" / "sa.train.json") == ids(tmp_path / "b" / "polarity.train.json")


def test_repeated_inputs_are_dropped_before_splitting(tmp_path):
    root = tmp_path / "ni"
    inst = sa_instances(50)
    dupes = [{"id": f"dup-{i}", "input": inst[i]["input"], "output": ["negative"]} for i in range(0, 20, 2)]
    write_task(root, "task1312_x", inst[:25] + dupes + inst[25:])
    sizes = Sizes(train=30, eval=12, extra=8, smp01=10, smp005=5, smp001=2)  # 50 = exactly the unique inputs
    p = build(root, tmp_path / "out", {"sa": "task1312_x"}, seed=1, sizes=sizes)
    t = p["tasks"]["sa"]
    assert (t["instances_in_file"], t["duplicate_inputs_dropped"], t["unique_instances"]) == (60, 10, 50)
    rows = [r for s in ("train", "eval", "extra") for r in read_jsonl(tmp_path / "out" / FILES[s].format(task="sa"))]
    assert len(rows) == 50 and len({r["input"] for r in rows}) == 50
    assert not any(r["id"].startswith("dup-") for r in rows)  # the first instance of an input is kept
    assert "duplicate inputs dropped" in (tmp_path / "out" / "PROVENANCE.md").read_text()


def test_provenance_records_source_counts_seed_and_attribution(superni, tmp_path):
    out = tmp_path / "out"
    build(superni, out, TWO, seed=9, sizes=SMALL)
    p = json.loads((out / "provenance.json").read_text())
    assert p["source"] == str(superni.resolve()) and p["seed"] == 9
    assert p["sizes"] == {"train": 24, "eval": 8, "extra": 4, "smp01": 12, "smp005": 8, "smp001": 4}
    assert p["date"].startswith(time.strftime("%Y-", time.gmtime()))
    assert p["tasks"]["sa"]["superni_task"] == TWO["sa"] and p["tasks"]["sa"]["instances_in_file"] == 60
    assert p["tasks"]["sa"]["stratified"] is True and p["tasks"]["pe"]["stratified"] is False
    assert p["tasks"]["pe"]["files"]["pe.train.smp001.json"] == 4
    md = (out / "PROVENANCE.md").read_text()
    assert "Wang et al., 2022" in md and "Apache-2.0" in md and TWO["pe"] in md


def test_definition_parts_are_joined_without_blank_lines():
    assert join_definition(["First part. ", "Second part.\n\nThird line."]) == "First part.\nSecond part.\nThird line."


def test_output_folder_is_readable_like_any_user_file(superni, tmp_path):
    out = tmp_path / "out"
    build(superni, out, TWO, seed=1, sizes=SMALL)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "sa.eval.json").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("content, message", [
    (None, "no such SuperNI task file"),
    ("{\"Definition\": [\"d\"], \"Instances\": [", "malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"Definition": "not a list", "Instances": [{"id": "a", "input": "x", "output": ["y"]}]}),
     "'Definition' must be a non-empty list of strings"),
    (json.dumps({"Definition": ["d"], "Instances": []}), "'Instances' must be a non-empty list"),
])
def test_missing_or_malformed_task_file_names_the_file(tmp_path, content, message):
    root = tmp_path / "ni"
    (root / "tasks").mkdir(parents=True)
    if content is not None:
        (root / "tasks" / "task1_bad.json").write_text(content, encoding="utf-8")
    with pytest.raises(SersError, match=message) as e:
        build(root, tmp_path / "out", {"t": "task1_bad"}, sizes=SMALL)
    assert str(root / "tasks" / "task1_bad.json") in str(e.value)
    assert not (tmp_path / "out").exists()


def test_malformed_json_names_the_line(tmp_path):
    root = tmp_path / "ni"
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "task1_bad.json").write_text('{\n  "Definition": ["d"],\n  "Instances": [}\n', encoding="utf-8")
    with pytest.raises(SersError, match=r"task1_bad.json: malformed JSON: .* at line 3"):
        build(root, tmp_path / "out", {"t": "task1_bad"}, sizes=SMALL)


@pytest.mark.parametrize("bad, message", [
    ({"id": "task9-bad", "input": "x"}, "'output' must be a non-empty list"),
    ({"id": "task9-bad", "input": "x", "output": []}, "'output' must be a non-empty list"),
    ({"id": "task9-bad", "input": "x", "output": "y"}, "'output' must be a non-empty list"),
    ({"id": "task9-bad", "input": "x", "output": ["  "]}, "first output must be a non-empty string"),
    ({"id": "task9-bad", "output": ["y"]}, "missing or empty 'input'"),
    ({"id": "task1312-0003", "input": "x", "output": ["y"]}, "duplicate id"),
])
def test_bad_instance_names_file_index_and_id(tmp_path, bad, message):
    root = tmp_path / "ni"
    inst = sa_instances()
    inst.insert(41, bad)
    path = write_task(root, "task9_x", inst)
    with pytest.raises(SersError, match=message) as e:
        build(root, tmp_path / "out", {"t": "task9_x"}, sizes=SMALL)
    assert f"{path}: Instances[41] (id {bad['id']!r})" in str(e.value)


def test_instance_without_id_names_its_index(tmp_path):
    root = tmp_path / "ni"
    inst = sa_instances()
    inst[5] = {"input": "x", "output": ["y"]}
    path = write_task(root, "task9_x", inst)
    with pytest.raises(SersError, match=rf"{path}: Instances\[5\]: missing or empty 'id'"):
        build(root, tmp_path / "out", {"t": "task9_x"}, sizes=SMALL)


def test_too_few_instances_names_file_and_counts(tmp_path):
    root = tmp_path / "ni"
    path = write_task(root, "task9_x", sa_instances(30))
    with pytest.raises(SersError) as e:
        build(root, tmp_path / "out", {"t": "task9_x"}, sizes=SMALL)
    msg = str(e.value)
    assert str(path) in msg and "30 unique instances" in msg and "= 36 are needed" in msg
    # Smaller sizes build from the same task.
    build(root, tmp_path / "out", {"t": "task9_x"}, sizes=Sizes(train=20, eval=6, extra=4, smp01=8, smp005=4, smp001=2))
    assert len(read_jsonl(tmp_path / "out" / "t.train.json")) == 20


def test_a_bad_second_task_writes_nothing(superni, tmp_path):
    with pytest.raises(SersError, match="no such SuperNI task file"):
        build(superni, tmp_path / "out", {**TWO, "zz": "task404_missing"}, sizes=SMALL)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())  # no temporary folder left


@pytest.mark.parametrize("tasks, message", [
    ({"../sa": TWO["sa"]}, "may only contain"),
    ({"sa": "../tasks/task1312_amazonreview_polarity_classification"}, "may only contain"),
    ({}, "no tasks given"),
])
def test_bad_task_names_are_refused(superni, tmp_path, tasks, message):
    with pytest.raises(SersError, match=message):
        build(superni, tmp_path / "out", tasks, sizes=SMALL)


def test_sizes_must_nest_and_be_positive(superni, tmp_path):
    with pytest.raises(SersError, match="must nest"):
        build(superni, tmp_path / "out", TWO, sizes=Sizes(train=24, eval=8, extra=4, smp01=12, smp005=16, smp001=4))
    with pytest.raises(SersError, match="extra must be a positive integer"):
        build(superni, tmp_path / "out", TWO, sizes=Sizes(train=24, eval=8, extra=0, smp01=12, smp005=8, smp001=4))


def test_existing_folder_is_kept_unless_forced(superni, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(SersError, match="not empty; pass --force"):
        build(superni, out, TWO, sizes=SMALL)
    assert (out / "mine.txt").read_text() == "user data"
    # A failing forced build leaves the old folder as it was.
    with pytest.raises(SersError, match="no such SuperNI task file"):
        build(superni, out, {"zz": "task404_missing"}, sizes=SMALL, force=True)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    build(superni, out, TWO, sizes=SMALL, force=True)
    assert not (out / "mine.txt").exists() and (out / "sa.train.json").exists()
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(SersError, match="symbolic link"):
        build(superni, tmp_path / "link", TWO, sizes=SMALL, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SersError, match="not a folder"):
        build(superni, tmp_path / "file", TWO, sizes=SMALL, force=True)
    # An empty folder needs no --force.
    (tmp_path / "empty").mkdir()
    build(superni, tmp_path / "empty", TWO, sizes=SMALL)


def test_force_never_replaces_the_source_or_the_current_folder(superni, tmp_path, monkeypatch):
    with pytest.raises(SersError, match="contains the SuperNI checkout"):
        build(superni, tmp_path, TWO, sizes=SMALL, force=True)
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    monkeypatch.chdir(project / "src")
    with pytest.raises(SersError, match="contains the current folder"):
        build(superni, "..", TWO, sizes=SMALL, force=True)
    with pytest.raises(SersError, match="is or contains the current folder"):
        build(superni, ".", TWO, sizes=SMALL, force=True)
    assert (superni / "tasks" / f"{TWO['sa']}.json").exists() and (project / "src").is_dir()


def test_task_specs():
    assert parse_task_specs(["sa=task1312_x.json", "my.task=task2_y"]) == {"sa": "task1312_x", "my.task": "task2_y"}
    for bad in (["sa"], ["=task1"], ["sa="], ["sa=task1", "sa=task2"]):
        with pytest.raises(SersError, match="--task"):
            parse_task_specs(bad)
    assert DEFAULT_TASKS["sa"] == "task1312_amazonreview_polarity_classification" and len(DEFAULT_TASKS) == 10


def test_command_line(superni, tmp_path, capsys):
    args = ["--superni", str(superni), "--out", str(tmp_path / "out"), "--task", f"polarity={TWO['sa']}",
            "--task", f"tail={TWO['pe']}", "--seed", "4", "--train", "24", "--eval", "8", "--extra", "4",
            "--smp01", "12", "--smp005", "8", "--smp001", "4"]
    assert main(args) == 0
    assert "wrote 2 tasks" in capsys.readouterr().out
    assert len(read_jsonl(tmp_path / "out" / "tail.train.smp01.json")) == 12
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["seed"] == 4
    assert main(args) == 1  # the folder now exists
    assert "pass --force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert main(["--superni", str(superni), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "task024_cosmosqa_answer_generation.json: no such SuperNI task file" in err


def test_built_two_task_data_runs_the_tiny_dag(superni, tmp_path):
    """Tasks named by the user, built from SuperNI files, run end to end through the workflow.

    Method replay and one synthesis job between them read every file the config names: seeds (smp001),
    train, replay (smp01) and eval.
    """
    data = tmp_path / "built"
    build(superni, data, {"polarity": TWO["sa"], "tail": TWO["pe"]}, seed=2,
          sizes=Sizes(train=24, eval=8, extra=4, smp01=8, smp005=6, smp001=6))
    (tmp_path / "wf").mkdir()
    wf = Workflow(tmp_path / "wf")
    cfg = yaml.safe_load((REPO / "config/tiny.yaml").read_text())
    cfg.update(run="superni", tasks=["polarity", "tail"], orders={"order1": ["polarity", "tail"]},
               methods=["replay"])
    cfg["data"].update(dir=str(data), max_train_rows=8, max_replay_rows=4)
    cfg["filter"] = {"defaults": {"min_tokens": 2}}
    cfg["eval"].update(max_rows=4, base=False, all_tasks=False)
    run = wf.root / "results/superni"
    # replay reads train, replay and eval; one synthesis job reads the seeds (no whole pseudo chain: time)
    wf.snakemake("results/superni/order1/replay/metrics.json", "results/superni/pseudo/mask/polarity/raw.jsonl",
                 "--configfile", wf.write_config("superni.yaml", cfg))
    for method in cfg["methods"]:
        metrics = json.loads((run / f"order1/{method}/metrics.json").read_text())
        assert metrics["tasks"] == ["polarity", "tail"] and metrics["n_tasks"] == 2
        for task in ("polarity", "tail"):
            scored = {r["id"] for r in read_jsonl(run / f"order1/{method}/stage2-tail/eval/{task}.jsonl")}
            assert scored and scored <= set(ids(data / f"{task}.eval.json"))
    seeds = {r["provenance"]["seed_id"] for r in read_jsonl(run / "pseudo/mask/polarity/raw.jsonl")}
    assert seeds and seeds <= set(ids(data / "polarity.train.smp001.json"))
    real = {r["id"] for r in read_jsonl(run / "real/polarity/rehearsal.jsonl")}
    assert real and real <= set(ids(data / "polarity.train.smp01.json"))
