# Where each artifact lies under the run folder RUN (results/{run}/): the base model, the pseudo chains,
# a stage's folder and adapter, the evaluation summaries.
import functools
import os

from sers.config import data_file

PSEUDO = f"{RUN}/pseudo"
# every job's resource record (`benchmark:`): BENCHMARKS/<rule>/<the job's artifact path>.tsv, read by sers.usage
BENCHMARKS = f"{RUN}/benchmarks"
# continual-learning stages (METHOD.md §4–6): a rule's output pattern
STAGE_DIR = f"{RUN}/{{order}}/{{method}}/stage{{stage}}-{{task}}"


def model_dir():
    """The base model θ0: a folder this workflow prepares, or the user's path / hub id."""
    m = config["model"]
    if m["source"] == "gguf":
        return f"{m['cache_dir']}/{m['gguf_package']}"
    if m["source"] == "tiny":
        return f"{m['cache_dir']}/tiny-llama"
    return m["path"]


def stage_dir(order, method, stage):
    task = ORDERS[order][int(stage) - 1]
    return f"{RUN}/{order}/{method}/stage{stage}-{task}"


def adapter_path(order, method, stage):
    """Stage 1 trains on task 1 alone with no penalty for every method, so its adapter is shared."""
    if int(stage) == 1:
        return f"{RUN}/{order}/stage1-{ORDERS[order][0]}/adapter"
    return f"{stage_dir(order, method, stage)}/adapter"


def model_dir_of(order, method, stage):
    """The evaluated model's folder under RUN: its adapter's parent (the shared first stage has no method)."""
    if int(stage) == 1:
        return f"{order}/stage1-{ORDERS[order][0]}"
    return f"{order}/{method}/stage{stage}-{ORDERS[order][int(stage) - 1]}"


# ---- evaluation (METHOD.md §7) ----
def eval_dirs(order, method):
    """The eval/ folders (one `score_eval` job each) that hold `eval_summaries(order, method)`."""
    return list(dict.fromkeys(os.path.dirname(path) for path in eval_summaries(order, method)))


def eval_summaries(order, method):
    """Every evaluation summary the metrics of (order, method) need."""
    return list(_eval_summaries(order, method))


@functools.cache  # asked for by several rules' input functions and params: built once per (order, method)
def _eval_summaries(order, method):
    tasks = ORDERS[order]
    if method == "mtl":
        return tuple(f"{RUN}/mtl/stage1-all/eval/{t}.json" for t in tasks)
    files = [
        f"{RUN}/{model_dir_of(order, method, s)}/eval/{t}.json"
        for s in range(1, len(tasks) + 1)
        for t in eval_tasks_at(order, s)
    ]
    if config["eval"]["base"]:
        files += [f"{RUN}/base/eval/{t}.json" for t in tasks]
    return tuple(files)


@functools.cache
def eval_file(task):
    """A task's eval split (data_file), once per task: every evaluated model reads it."""
    return data_file(config, task, "eval")


def eval_predictions(order, method):
    """The per-row prediction files beside `eval_summaries(order, method)`, in the same order."""
    return [path.removesuffix(".json") + ".jsonl" for path in eval_summaries(order, method)]
