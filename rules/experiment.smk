# Which tasks, methods and models the configured experiment has: the questions every other file asks
# of the config (ORDERS and the method families of sers.methods), answered once.
from sers.config import all_tasks
from sers.methods import ICL_METHODS, MASK_METHODS, NO_EVOLUTION_METHODS, PSEUDO_METHODS


def pseudo_kinds():
    """Which synthesis kinds the configured methods need: masked infilling and/or SSR's ICL."""
    methods = set(config["methods"])
    kinds = []
    if methods & MASK_METHODS:
        kinds.append("mask")
    if methods & ICL_METHODS:
        kinds.append("icl")
    return kinds


def pseudo_kind(method):
    return "icl" if method in ICL_METHODS else "mask"


def rehearsed_tasks():
    """The tasks some later stage rehearses (all but the last of each order): only they need pseudo chains."""
    rehearsed = {t for tasks in ORDERS.values() for t in tasks[:-1]}
    return [t for t in all_tasks(config) if t in rehearsed]


def sequential_methods():
    return [m for m in config["methods"] if m != "mtl"]


def mtl_tasks():
    return list(dict.fromkeys(t for tasks in ORDERS.values() for t in tasks))


def evolution_probed(method):
    """Probe self-evolution on held-back real rows (a diagnostic) where the method evolves labels."""
    d = config["diagnostics"]
    return (
        d["evolution_probe_rows"] > 0
        and method in d["evolution_probe_methods"]
        and method in PSEUDO_METHODS
        and method not in NO_EVOLUTION_METHODS
    )


def eval_tasks_at(order, stage):
    tasks = ORDERS[order]
    return list(tasks) if config["eval"]["all_tasks"] else list(tasks[: int(stage)])


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
