# What `all` asks for, and the sets the report rules gather: every pseudo chain some stage rehearses,
# every stage's artifacts, every (order, method)'s metrics, the summary, the plots and the export.
from sers.methods import PENALTY_METHODS, PSEUDO_METHODS


def pseudo_targets():
    return [f"{PSEUDO}/{kind}/{task}/selected.jsonl" for kind in pseudo_kinds() for task in rehearsed_tasks()]


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


def metrics_targets():
    return [f"{RUN}/{order}/{method}/metrics.json" for order in ORDERS for method in config["methods"]]


def comparison_runs():
    """{order: {method: [prediction files]}}: the per-row scores the paired comparisons read."""
    return {o: {m: eval_predictions(o, m) for m in config["methods"]} for o in ORDERS}


def rehearsal_exports():
    """name -> labelled rehearsal set, for LLaMA-Factory's dataset_info.json."""
    sets = {}
    for order, tasks in ORDERS.items():
        for method in sequential_methods():
            if method in PSEUDO_METHODS:
                for t in range(1, len(tasks)):
                    sets[f"{order}.{method}.stage{t}-{tasks[t - 1]}"] = f"{stage_dir(order, method, t)}/rehearsal.jsonl"
    return sets


def report_targets():
    return [f"{RUN}/summary/methods.md", f"{RUN}/summary/plots.done", f"{RUN}/export/dataset_info.json"]


def run_targets():
    """Every artifact of the run but the resource tables (which are made from the records of all of them)."""
    return pseudo_targets() + stage_targets() + metrics_targets() + report_targets()


def all_targets():
    return run_targets() + [f"{RUN}/summary/resources.md"]
