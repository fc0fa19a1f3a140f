# Validation, paths and input functions shared by every rule. Rules only wire; the logic is in
# src/sers, and the scripts in workflow/scripts adapt snakemake.input/params/output to it.
import functools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from sers.config import (
    all_tasks,
    apply_user_experiment,
    check_data_files,
    check_data_sizes,
    data_file,
    filter_settings,
    selection_settings,
    training_settings,
    validate_config,
)
from sers.data import read_rows
from sers.errors import SersError
from sers.evaluation import eval_sample, sample_digest
from sers.methods import (
    BASELINE_METHODS,
    ICL_METHODS,
    KMEANS_REPLAY_METHODS,
    MASK_METHODS,
    NO_EVOLUTION_METHODS,
    PENALTY_METHODS,
    PENALTY_VARIANTS,
    PSEUDO_METHODS,
)
from sers.seeding import derive_seed

FULL_DATA_HINT = (
    "Build the full data from a Super-NaturalInstructions checkout with "
    "`make data SUPERNI=/path/to/natural-instructions OUT=data/ni-c012` and run with "
    "`--config data.dir=data/ni-c012` (README, 'Full data from SuperNI')."
)

try:
    # a user's config files define the experiment whole: no orders or tasks merged in from config.yaml
    _not_users = apply_user_experiment(config, workflow.config_settings.overwrite_config)
    if _not_users:
        logger.info(
            f"sers: your config files define the experiment; {', '.join(_not_users)} not from config/config.yaml"
        )
    validate_config(config, "config")
    check_data_files(config, "config")
except SersError as _error:
    raise WorkflowError(str(_error)) from None

RUN = f"{config['results_dir']}/{config['run']}"


def replicate_orders():
    """{run order: tasks}: every order once per training replicate — "order1", "order1-rep2", … Replicates
    differ in their training seeds (data order, LoRA init) and share the pseudo samples and eval rows."""
    out = {}
    for order, tasks in config["orders"].items():
        for r in range(1, config["replicates"] + 1):
            out[order if r == 1 else f"{order}-rep{r}"] = tasks
    return out


ORDERS = replicate_orders()
REPLICATE_GROUPS = {o: [k for k in ORDERS if k == o or k.startswith(f"{o}-rep")] for o in config["orders"]}
PSEUDO = f"{RUN}/pseudo"
SCRIPTS = "workflow/scripts"


wildcard_constraints:
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    kind=r"mask|icl",
    order=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    method=r"[a-z][a-z0-9-]*",
    stage=r"\d+",


def model_dir():
    """The base model θ0: a folder this workflow prepares, or the user's path / hub id."""
    m = config["model"]
    if m["source"] == "gguf":
        return f"{m['cache_dir']}/{m['gguf_package']}"
    if m["source"] == "tiny":
        return f"{m['cache_dir']}/tiny-llama"
    return m["path"]


def model_input():
    """Prepared models are inputs (so they are built first); a user path is only a parameter,
    which keeps `snakemake -n` working where the model is not on this machine."""
    return [model_dir()] if config["model"]["source"] != "path" else []


def model_params():
    m = config["model"]
    return {
        "path": model_dir(),
        "prompt_format": m["prompt_format"],
        "trust_remote_code": m["trust_remote_code"],
        "dtype": m["dtype"],
        "device": config["device"],
        "max_prompt_tokens": m["max_prompt_tokens"],
    }


def embedder_params():
    return dict(config["embedder"])


def pseudo_kinds():
    """Which synthesis kinds the configured methods need: masked infilling and/or SSR's ICL."""
    methods = set(config["methods"])
    kinds = []
    if methods & MASK_METHODS:
        kinds.append("mask")
    if methods & ICL_METHODS:
        kinds.append("icl")
    return kinds


def synthesis_mode(kind):
    return config["synthesis"]["mode"] if kind == "mask" else "icl"


def rehearsed_tasks():
    """The tasks some later stage rehearses (all but the last of each order): only they need pseudo chains."""
    rehearsed = {t for tasks in ORDERS.values() for t in tasks[:-1]}
    return [t for t in all_tasks(config) if t in rehearsed]


def pseudo_targets():
    return [f"{PSEUDO}/{kind}/{task}/selected.jsonl" for kind in pseudo_kinds() for task in rehearsed_tasks()]


# ---- continual-learning stages (METHOD.md §4–6) ----
STAGE_DIR = f"{RUN}/{{order}}/{{method}}/stage{{stage}}-{{task}}"


def stage_dir(order, method, stage):
    task = ORDERS[order][int(stage) - 1]
    return f"{RUN}/{order}/{method}/stage{stage}-{task}"


def check_stage(wc):
    tasks = ORDERS.get(wc.order)
    if tasks is None or not 1 <= int(wc.stage) <= len(tasks) or tasks[int(wc.stage) - 1] != wc.task:
        raise WorkflowError(f"no stage {wc.stage} with task {wc.task!r} in order {wc.order!r}")


def adapter_path(order, method, stage):
    """Stage 1 trains on task 1 alone with no penalty for every method, so its adapter is shared."""
    if int(stage) == 1:
        return f"{RUN}/{order}/stage1-{ORDERS[order][0]}/adapter"
    return f"{stage_dir(order, method, stage)}/adapter"


def previous_adapter(wc):
    check_stage(wc)
    t = int(wc.stage)
    return [adapter_path(wc.order, wc.method, t - 1)] if t > 1 else []


def stage_adapter(wc):
    check_stage(wc)
    return adapter_path(wc.order, wc.method, wc.stage)


def model_dir_of(order, method, stage):
    """The evaluated model's folder under RUN (the shared first stage has no method)."""
    return os.path.relpath(os.path.dirname(adapter_path(order, method, stage)), RUN)


def rehearsal_sets(wc):
    """The labelled rehearsal rows of every task before this stage (none for seq)."""
    t = int(wc.stage)
    earlier = ORDERS[wc.order][: t - 1]
    if wc.method == "replay":
        return [f"{RUN}/real/{task}/rehearsal.jsonl" for task in earlier]
    if wc.method in KMEANS_REPLAY_METHODS:
        return [f"{RUN}/real-kmeans/{task}/selected.jsonl" for task in earlier]
    if wc.method in PSEUDO_METHODS:
        return [f"{stage_dir(wc.order, wc.method, j)}/rehearsal.jsonl" for j in range(1, t)]
    return []


def similarity_input(wc):
    if wc.method in PENALTY_METHODS and int(wc.stage) > 1:
        return [f"{STAGE_DIR}/similarity.json".format(**wc)]
    return []


def fisher_input(wc):
    """EWC: the diagonal Fisher of the previous stage's adapter on the previous task's rows."""
    t = int(wc.stage)
    if wc.method == "ewc" and t > 1:
        return [f"{stage_dir(wc.order, wc.method, t - 1)}/fisher.safetensors"]
    return []


def baseline_params(method):
    """A baseline's own settings (only its section, so a changed key reruns that method alone)."""
    if method not in BASELINE_METHODS:
        return None
    return {"kind": method, **config["baselines"][method]}


def pseudo_kind(method):
    return "icl" if method in ICL_METHODS else "mask"


def penalty_params(method):
    """How a method's penalty is formed: the reference's ½ Σ mean(p²) toward 0, or a research variant."""
    anchor, reduction = PENALTY_VARIANTS.get(method, ("zero", "mean"))
    scale = config["similarity"]["variant_scale"] if method in PENALTY_VARIANTS else 1.0
    return {"anchor": anchor, "reduction": reduction, "scale": scale}


def evolution_params(wc):
    settings = dict(config["evolution"])
    if wc.method in NO_EVOLUTION_METHODS:
        settings["se_ratio"] = 0.0
    return settings


def evolution_probed(method):
    """Probe self-evolution on held-back real rows (a diagnostic) where the method evolves labels."""
    d = config["diagnostics"]
    return (
        d["evolution_probe_rows"] > 0
        and method in d["evolution_probe_methods"]
        and method in PSEUDO_METHODS
        and method not in NO_EVOLUTION_METHODS
    )


def sequential_methods():
    return [m for m in config["methods"] if m != "mtl"]


def stage_targets():
    targets = []
    for order, tasks in ORDERS.items():
        for method in sequential_methods():
            for t in range(1, len(tasks) + 1):
                d = stage_dir(order, method, t)
                targets.append(adapter_path(order, method, t))
                if method in PENALTY_METHODS and t > 1:
                    targets.append(f"{d}/similarity.json")
                if method in PSEUDO_METHODS and t < len(tasks):  # the last stage's rows are never rehearsed
                    targets.append(f"{d}/rehearsal.jsonl")
                if evolution_probed(method) and t < len(tasks):
                    targets.append(f"{d}/evolution_probe.json")
    if "mtl" in config["methods"]:
        targets.append(f"{RUN}/mtl/stage1-all/adapter")
    return targets


def mtl_tasks():
    return list(dict.fromkeys(t for tasks in ORDERS.values() for t in tasks))


# ---- evaluation, metrics and the report (METHOD.md §7) ----
def eval_tasks_at(order, stage):
    tasks = ORDERS[order]
    return list(tasks) if config["eval"]["all_tasks"] else list(tasks[: int(stage)])


def eval_summaries(order, method):
    """Every evaluation summary the metrics of (order, method) need."""
    tasks = ORDERS[order]
    if method == "mtl":
        return [f"{RUN}/mtl/stage1-all/eval/{t}.json" for t in tasks]
    files = [
        f"{RUN}/{model_dir_of(order, method, s)}/eval/{t}.json"
        for s in range(1, len(tasks) + 1)
        for t in eval_tasks_at(order, s)
    ]
    if config["eval"]["base"]:
        files += [f"{RUN}/base/eval/{t}.json" for t in tasks]
    return files


def eval_predictions(order, method):
    """The per-row prediction files beside `eval_summaries(order, method)`, in the same order."""
    return [path.removesuffix(".json") + ".jsonl" for path in eval_summaries(order, method)]


def comparison_runs():
    """{order: {method: [prediction files]}}: the per-row scores the paired comparisons read."""
    return {o: {m: eval_predictions(o, m) for m in config["methods"]} for o in ORDERS}


def metrics_targets():
    return [f"{RUN}/{order}/{method}/metrics.json" for order in ORDERS for method in config["methods"]]


def evaluated_adapter(wc):
    return [] if wc.modeldir == "base" else [f"{RUN}/{wc.modeldir}/adapter"]


def model_eval_tasks(modeldir):
    """The tasks one evaluated model is scored on: θ0 and the multi-task model every task of the
    orders; a stage's model the tasks seen so far (every task of its order with eval.all_tasks)."""
    if modeldir in ("base", "mtl/stage1-all"):
        return mtl_tasks()
    parts = modeldir.split("/")
    order, stage = parts[0], parts[-1].removeprefix("stage").partition("-")[0]
    if order not in ORDERS:
        raise WorkflowError(f"no order {order!r} for the evaluated model {modeldir!r}")
    return eval_tasks_at(order, stage)


def eval_seed(task):
    return derive_seed(config["seed"], "eval", task)


@functools.cache
def eval_digest(task):
    """A digest of the eval prompts `task` is scored on: a parameter of every `evaluate` job, so a file
    whose prompts (or sampled rows) change reruns the generations, and one whose references alone
    change reruns only the scoring (the eval files are `ancient` inputs of `evaluate`)."""
    try:
        rows = read_rows(data_file(config, task, "eval"), config["data"]["max_line_bytes"])
    except SersError as error:
        raise WorkflowError(str(error)) from None
    return sample_digest(eval_sample(rows, config["eval"]["max_rows"], eval_seed(task)))


def summary_inputs(wildcards):
    runs = comparison_runs()
    return {
        "metrics": metrics_targets(),
        "predictions": sorted({f for by_method in runs.values() for files in by_method.values() for f in files}),
        "matrices": [f"{RUN}/{o}/{m}/matrix.csv" for o in ORDERS for m in config["methods"]],
    }


def plot_inputs(wildcards):
    kinds = pseudo_kinds()
    tasks = rehearsed_tasks()
    sims = [
        f"{stage_dir(o, m, t)}/similarity.json"
        for o, ts in ORDERS.items()
        for m in sequential_methods()
        if m in PENALTY_METHODS
        for t in range(2, len(ts) + 1)
    ]
    return {
        "metrics": metrics_targets(),
        "similarity": sims,
        "filter_summaries": [f"{PSEUDO}/{k}/{t}/filter_summary.json" for k in kinds for t in tasks],
        "selections": [f"{PSEUDO}/{k}/{t}/selection.json" for k in kinds for t in tasks],
        "embeddings": [f"{PSEUDO}/{k}/{t}/embeddings.npy" for k in kinds for t in tasks],
        "selected": [f"{PSEUDO}/{k}/{t}/selected.jsonl" for k in kinds for t in tasks],
        "rehearsal": list(rehearsal_exports().values()),
        "seeds": [data_file(config, t, "seeds") for t in tasks],
        "comparisons": f"{RUN}/summary/comparisons.json",
    }


def report_targets():
    return [f"{RUN}/summary/methods.md", f"{RUN}/summary/plots.done", f"{RUN}/export/dataset_info.json"]


def rehearsal_exports():
    """name -> labelled rehearsal set, for LLaMA-Factory's dataset_info.json."""
    sets = {}
    for order, tasks in ORDERS.items():
        for method in sequential_methods():
            if method in PSEUDO_METHODS:
                for t in range(1, len(tasks)):
                    sets[f"{order}.{method}.stage{t}-{tasks[t - 1]}"] = f"{stage_dir(order, method, t)}/rehearsal.jsonl"
    return sets


def all_targets():
    return pseudo_targets() + stage_targets() + metrics_targets() + report_targets()
