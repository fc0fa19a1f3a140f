# Input functions: a job's wildcards → the files it reads. A prepared base model is an input (so it is
# built first); the stage chain reads the previous stage's adapter, the rehearsal rows of earlier tasks,
# its similarity or Fisher; the report rules read every run's metrics and predictions.
from sers.methods import KMEANS_REPLAY_METHODS, PENALTY_METHODS, PSEUDO_METHODS


def model_input():
    """Prepared models are inputs (so they are built first); a user path is only a parameter,
    which keeps `snakemake -n` working where the model is not on this machine."""
    return [model_dir()] if config["model"]["source"] != "path" else []


# ---- continual-learning stages (METHOD.md §4–6) ----
def check_stage(wc):
    tasks = ORDERS.get(wc.order)
    if tasks is None or not 1 <= int(wc.stage) <= len(tasks) or tasks[int(wc.stage) - 1] != wc.task:
        raise WorkflowError(f"no stage {wc.stage} with task {wc.task!r} in order {wc.order!r}")


def previous_adapter(wc):
    check_stage(wc)
    t = int(wc.stage)
    return [adapter_path(wc.order, wc.method, t - 1)] if t > 1 else []


def stage_adapter(wc):
    check_stage(wc)
    return adapter_path(wc.order, wc.method, wc.stage)


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


# ---- evaluation, metrics and the report (METHOD.md §7) ----
def evaluated_adapter(wc):
    return [] if wc.modeldir == "base" else [f"{RUN}/{wc.modeldir}/adapter"]


def summary_inputs(wildcards):
    """The metrics, and the eval/ folders of the per-row predictions that the comparisons read
    (their files are the `runs` parameter: comparison_runs)."""
    return {
        "metrics": metrics_targets(),
        "evaluations": sorted({d for o in ORDERS for m in config["methods"] for d in eval_dirs(o, m)}),
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
