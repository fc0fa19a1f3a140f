"""Build NI-c012-style data (or any task sequence) from a Super-NaturalInstructions checkout.

A SuperNI task file (`tasks/<name>.json` in github.com/allenai/natural-instructions) is one JSON
object with a `Definition` (a list of strings) and `Instances` (a list of {id, input, output: [str…]}).
For each task this module writes the files the workflow reads (`data.files` in the config schema):

    C.train.json  C.train.smp01.json  C.train.smp005.json  C.train.smp001.json  C.eval.json  C.extra.json

as JSON Lines rows {id, input, output, full_prompt, task_name}, plus `provenance.json` and
`PROVENANCE.md` (source, counts, seed, sizes, date, attribution) beside them.

How the splits are drawn, per task:
1. instances with an input identical to an earlier instance's are dropped (first one kept), so the
   same prompt can never sit in both train and eval;
2. the remaining instances are shuffled with a seed derived from `seed` and the SuperNI task name
   (`sers.seeding.derive_seed`), so a task's split does not depend on what the user calls it;
3. eval, then extra, then train are taken from the shuffled pool (disjoint by construction);
   smp01 ⊂ train, smp005 ⊂ smp01, smp001 ⊂ smp005 (nested: the real seeds are part of the
   replay memory, which is part of train). Every draw goes through `sers.sampling.subsample_indices`:
   where a task's outputs form a small label set (`sa`, `pos`) the draw is stratified by label in
   proportion to the label shares, so a balanced source gives balanced splits.
Rows keep the shuffled order (label-mixed), not the file order.

A task with fewer unique instances than train + eval + extra is an error naming the file and the
counts; pass smaller sizes to build from it. Nothing is written until every task has been read and
split, the folder appears whole (`sers.io.atomic_path`), and an existing non-empty folder is only
replaced with `force=True` (`--force`).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .data import check_task_name
from .errors import SersError
from .io import atomic_path, write_json, write_jsonl, write_text
from .sampling import has_small_label_set, subsample_indices
from .seeding import derive_seed

# The ten NI-c012 tasks (data/ni-c012-sample/README.md): our category name → SuperNI task.
DEFAULT_TASKS: dict[str, str] = {
    "qa": "task024_cosmosqa_answer_generation",
    "qg": "task074_squad1.1_question_generation",
    "sa": "task1312_amazonreview_polarity_classification",
    "sum": "task511_reddit_tifu_long_text_summarization",
    "trans": "task1219_ted_translation_en_es",
    "dsg": "task574_air_dialogue_sentence_generation",
    "expl": "task192_hotpotqa_sentence_generation",
    "para": "task177_para-nmt_paraphrasing",
    "pe": "task064_all_elements_except_first_i",
    "pos": "task346_hybridqa_classification",
}
DEFAULT_SEED = 12  # the seed data/make_sample.py used for the shipped sample
# Split → file name; the names are the `data.files` defaults of the config schema (seeds = smp001,
# train, replay = smp01, eval) plus the two files the published NI-c012 also has (smp005, extra).
FILES: dict[str, str] = {
    "train": "{task}.train.json",
    "smp01": "{task}.train.smp01.json",
    "smp005": "{task}.train.smp005.json",
    "smp001": "{task}.train.smp001.json",
    "eval": "{task}.eval.json",
    "extra": "{task}.extra.json",
}
ATTRIBUTION = ("Derived from Super-NaturalInstructions (Wang et al., 2022, \"Super-NaturalInstructions: "
               "Generalization via Declarative Instructions on 1600+ NLP Tasks\", EMNLP 2022; "
               "https://github.com/allenai/natural-instructions), licensed under Apache-2.0.")


@dataclass(frozen=True)
class Sizes:
    """Rows per split; the defaults are the published NI-c012 sizes."""
    train: int = 2000
    eval: int = 500
    extra: int = 20
    smp01: int = 200
    smp005: int = 100
    smp001: int = 20

    def check(self) -> None:
        for name, n in asdict(self).items():
            # Every file must have a row: sers.data.read_rows refuses an empty file.
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise SersError(f"superni: size {name} must be a positive integer, got {n!r}")
        if not self.smp001 <= self.smp005 <= self.smp01 <= self.train:
            raise SersError(f"superni: sizes must nest, smp001 ≤ smp005 ≤ smp01 ≤ train; got smp001={self.smp001}, "
                            f"smp005={self.smp005}, smp01={self.smp01}, train={self.train}")

    @property
    def needed(self) -> int:
        return self.train + self.eval + self.extra


@dataclass(frozen=True)
class Instance:
    id: str
    input: str
    output: str  # the first reference output


@dataclass(frozen=True)
class SuperNITask:
    name: str
    path: Path
    definition: str
    instances: list[Instance]  # unique inputs, file order
    n_in_file: int
    n_duplicate_inputs: int
    sha256: str


def join_definition(parts: Sequence[str]) -> str:
    """The task instruction: the Definition's strings, one per line.

    The project takes everything before a prompt's first blank line as the instruction
    (`sers.data.split_instruction`), so blank lines inside a definition are collapsed to single
    line breaks; otherwise the instruction would be cut at the blank line.
    """
    text = "\n".join(p.strip() for p in parts if p.strip())
    return re.sub(r"\n\s*\n", "\n", text)


def load_task(path: str | os.PathLike, name: str | None = None) -> SuperNITask:
    """Read and check one SuperNI task file; SersError names the file (and instance) at fault."""
    path = Path(path)
    name = name or path.stem
    if not path.is_file():
        raise SersError(f"{path}: no such SuperNI task file (is --superni the natural-instructions checkout?)")
    raw = path.read_bytes()
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SersError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SersError(f"{path}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(obj, dict):
        raise SersError(f"{path}: expected a JSON object with Definition and Instances, got {type(obj).__name__}")
    definition = obj.get("Definition")
    if (not isinstance(definition, list) or not all(isinstance(p, str) for p in definition)
            or not join_definition(definition)):
        raise SersError(f"{path}: 'Definition' must be a non-empty list of strings")
    items = obj.get("Instances")
    if not isinstance(items, list) or not items:
        raise SersError(f"{path}: 'Instances' must be a non-empty list")
    instances: list[Instance] = []
    ids: dict[str, int] = {}
    inputs: set[str] = set()
    duplicates = 0
    for i, item in enumerate(items):
        where = f"{path}: Instances[{i}]"
        if not isinstance(item, dict):
            raise SersError(f"{where}: expected an object, got {type(item).__name__}")
        iid = item.get("id")
        if not isinstance(iid, str) or not iid.strip():
            raise SersError(f"{where}: missing or empty 'id'")
        where = f"{where} (id {iid!r})"
        if iid in ids:
            raise SersError(f"{where}: duplicate id (first at Instances[{ids[iid]}])")
        ids[iid] = i
        text = item.get("input")
        if not isinstance(text, str) or not text.strip():
            raise SersError(f"{where}: missing or empty 'input'")
        outputs = item.get("output")
        if not isinstance(outputs, list) or not outputs:
            raise SersError(f"{where}: 'output' must be a non-empty list of strings")
        if not isinstance(outputs[0], str) or not outputs[0].strip():
            raise SersError(f"{where}: the first output must be a non-empty string")
        if text in inputs:
            duplicates += 1
            continue
        inputs.add(text)
        instances.append(Instance(iid, text, outputs[0]))
    return SuperNITask(name, path, join_definition(definition), instances, len(items), duplicates,
                       hashlib.sha256(raw).hexdigest())


def split_task(task: SuperNITask, sizes: Sizes, seed: int) -> dict[str, list[Instance]]:
    """{split: instances} for one task, as described in the module docstring."""
    pool = list(task.instances)
    if len(pool) < sizes.needed:
        raise SersError(
            f"{task.path}: {len(pool)} unique instances ({task.n_in_file} in the file, {task.n_duplicate_inputs} "
            f"with a repeated input), but train {sizes.train} + eval {sizes.eval} + extra {sizes.extra} = "
            f"{sizes.needed} are needed; pass smaller sizes (--train/--eval/--extra) to build from this task")
    task_seed = derive_seed(seed, "superni", task.name)
    random.Random(task_seed).shuffle(pool)
    stratify = has_small_label_set([x.output for x in pool])

    def take(rows: list[Instance], n: int, key: str) -> tuple[list[Instance], list[Instance]]:
        # A sub-seed per draw: each draw stays the same whatever sizes the other draws ask for.
        picked = set(subsample_indices([x.output for x in rows], n, derive_seed(task_seed, key), stratify))
        return [r for i, r in enumerate(rows) if i in picked], [r for i, r in enumerate(rows) if i not in picked]

    out: dict[str, list[Instance]] = {}
    out["eval"], rest = take(pool, sizes.eval, "eval")
    out["extra"], rest = take(rest, sizes.extra, "extra")
    out["train"], _ = take(rest, sizes.train, "train")
    out["smp01"], _ = take(out["train"], sizes.smp01, "smp01")
    out["smp005"], _ = take(out["smp01"], sizes.smp005, "smp005")
    out["smp001"], _ = take(out["smp005"], sizes.smp001, "smp001")
    return out


def to_row(task: SuperNITask, x: Instance) -> dict:
    """One row in the project's format (key order as in the published NI-c012 files)."""
    return {"id": x.id, "input": x.input, "output": x.output,
            "full_prompt": task.definition + "\n\n" + x.input, "task_name": task.name}


def parse_task_specs(specs: Sequence[str]) -> dict[str, str]:
    """["sa=task1312_…", …] → {"sa": "task1312_…"}; names checked, duplicates refused."""
    tasks: dict[str, str] = {}
    for spec in specs:
        name, sep, superni = spec.partition("=")
        if not sep or not name or not superni:
            raise SersError(f"--task {spec!r}: expected NAME=SUPERNI_TASK, e.g. sa=task1312_amazonreview_polarity_classification")
        if name in tasks:
            raise SersError(f"--task {spec!r}: task name {name!r} given twice")
        tasks[name] = superni.removesuffix(".json")
    return tasks


def _check_out_folder(out: Path, superni_dir: Path, force: bool) -> None:
    """Refuse to replace anything a user may still need."""
    if out.is_symlink():
        # Replacing the folder would replace the link, not what it points to: say so instead.
        raise SersError(f"{out}: is a symbolic link; give the folder it points to")
    if out.exists() and not out.is_dir():
        raise SersError(f"{out}: exists and is not a folder")
    resolved = out.resolve()
    for precious, what in ((superni_dir.resolve(), "the SuperNI checkout"), (Path.cwd().resolve(), "the current folder")):
        # --force replaces the whole folder: never one that is, or holds, the source or the cwd.
        if resolved == precious or resolved in precious.parents:
            raise SersError(f"{out}: is or contains {what}; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SersError(f"{out}: folder exists and is not empty; pass --force to replace it")


def build(superni_dir: str | os.PathLike, out_dir: str | os.PathLike, tasks: Mapping[str, str] | None = None,
          seed: int = DEFAULT_SEED, sizes: Sizes | None = None, force: bool = False) -> dict:
    """Write every task's split files and the provenance into `out_dir`; return the provenance.

    `tasks` maps our task names (file names, config task names) to SuperNI task names (file stems
    under `superni_dir/tasks`); by default the ten NI-c012 tasks.
    """
    superni_dir, out = Path(superni_dir), Path(out_dir)
    tasks = dict(DEFAULT_TASKS if tasks is None else tasks)
    sizes = sizes or Sizes()
    sizes.check()
    if not tasks:
        raise SersError("superni: no tasks given")
    for name, superni in tasks.items():
        check_task_name(name, "--task")
        check_task_name(superni, f"--task {name}= (SuperNI task)")
    if not (superni_dir / "tasks").is_dir():
        raise SersError(f"{superni_dir}: no tasks/ folder (expected a natural-instructions checkout)")
    _check_out_folder(out, superni_dir, force)

    # Read and split everything first: a bad file fails before anything is written.
    splits = {}
    loaded = {}
    for name, superni in tasks.items():
        loaded[name] = load_task(superni_dir / "tasks" / f"{superni}.json", superni)
        splits[name] = split_task(loaded[name], sizes, seed)

    provenance = {
        "generator": "sers.superni",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "source": str(superni_dir.resolve()),
        "seed": seed,
        "sizes": asdict(sizes),
        "splits": ("inputs deduplicated (first instance kept); seeded shuffle per task (seed derived from "
                   "the seed and the SuperNI task name); eval, extra, train disjoint; "
                   "smp001 ⊂ smp005 ⊂ smp01 ⊂ train; draws stratified by output where outputs form a small label set"),
        "attribution": ATTRIBUTION,
        "tasks": {},
    }
    for name, task in loaded.items():
        provenance["tasks"][name] = {
            "superni_task": task.name,
            "file": f"tasks/{task.path.name}",
            "sha256": task.sha256,
            "instances_in_file": task.n_in_file,
            "duplicate_inputs_dropped": task.n_duplicate_inputs,
            "unique_instances": len(task.instances),
            "task_seed": derive_seed(seed, "superni", task.name),
            "stratified": has_small_label_set([x.output for x in task.instances]),
            "files": {FILES[s].format(task=name): len(rows) for s, rows in splits[name].items()},
        }

    with atomic_path(out, is_dir=True) as tmp:
        for name, task in loaded.items():
            for split, rows in splits[name].items():
                write_jsonl(tmp / FILES[split].format(task=name), (to_row(task, x) for x in rows))
        write_json(tmp / "provenance.json", provenance)
        write_text(tmp / "PROVENANCE.md", provenance_markdown(provenance))
        _honour_umask(tmp)
    return provenance


def _honour_umask(folder: Path) -> None:
    """Temporary files and folders are created private (0600/0700); shared data should get the
    permissions any file the user creates gets."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def provenance_markdown(p: dict) -> str:
    lines = [
        "# Data built from Super-NaturalInstructions",
        "",
        f"Built by `python -m sers.superni` on {p['date']} from `{p['source']}`, seed {p['seed']}.",
        "Rows are JSON Lines with `id`, `input`, `output` (the first reference output), `full_prompt`",
        "(= task definition + \"\\n\\n\" + input) and `task_name` (the SuperNI task).",
        "",
        f"Splits: {p['splits']}.",
        "",
        "| task | SuperNI task | instances | duplicate inputs dropped | " + " | ".join(FILES) + " |",
        "|---|---|---|---|" + "---|" * len(FILES),
    ]
    for name, t in p["tasks"].items():
        counts = [str(t["files"][FILES[s].format(task=name)]) for s in FILES]
        lines.append(f"| {name} | {t['superni_task']} | {t['instances_in_file']} | {t['duplicate_inputs_dropped']} | "
                     + " | ".join(counts) + " |")
    lines += ["", "## Attribution", "", p["attribution"], ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sers.superni", description=__doc__.split("\n")[0])
    ap.add_argument("--superni", required=True, help="a natural-instructions checkout (with tasks/*.json)")
    ap.add_argument("--out", default="data/ni-c012", help="output folder (default: data/ni-c012)")
    ap.add_argument("--task", action="append", default=[], metavar="NAME=SUPERNI_TASK",
                    help="a task to build, repeatable, in order; default: the ten NI-c012 tasks")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"split seed (default {DEFAULT_SEED})")
    defaults = Sizes()
    for field in asdict(defaults):
        ap.add_argument(f"--{field}", type=int, default=getattr(defaults, field),
                        help=f"rows in the {field} split (default {getattr(defaults, field)})")
    ap.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    args = ap.parse_args(argv)
    try:
        tasks = parse_task_specs(args.task) if args.task else None
        sizes = Sizes(**{f: getattr(args, f) for f in asdict(defaults)})
        p = build(args.superni, args.out, tasks, seed=args.seed, sizes=sizes, force=args.force)
    except SersError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(p['tasks'])} tasks to {args.out} (see {Path(args.out) / 'PROVENANCE.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
