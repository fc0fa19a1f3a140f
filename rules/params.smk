# The settings passed to the scripts (the `params` of the rules). Each passes only the part of the config
# a script reads, so that changing a key reruns the jobs that use it and no others.
import functools

# the rules' params call derive_seed and the three *_settings of sers.config themselves
from sers.config import (
    data_file,
    filter_settings,
    selection_settings,
    training_settings,
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
    PENALTY_VARIANTS,
    REAL_REPLAY_METHODS,
)
from sers.seeding import derive_seed


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


def synthesis_mode(kind):
    return config["synthesis"]["mode"] if kind == "mask" else "icl"


def baseline_params(method):
    """A baseline's own settings (only its section, so a changed key reruns that method alone)."""
    if method not in BASELINE_METHODS:
        return None
    return {"kind": method, **config["baselines"][method]}


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


# ---- the resource tables (rule resource_usage) ----
def usage_methods():
    """The method names a resource record is attributed by: the configured ones first (the table's order),
    then every other method (records a removed method left in the run folder are still its own)."""
    known = {"seq", "mtl"} | MASK_METHODS | ICL_METHODS | REAL_REPLAY_METHODS | BASELINE_METHODS
    return list(config["methods"]) + sorted(known - set(config["methods"]))


def usage_rule_methods():
    """Rules whose every job serves one method, though their records' paths name none."""
    (kmeans,) = KMEANS_REPLAY_METHODS
    return {"real_rehearsal": "replay", **{r: kmeans for r in ("real_pool", "embed_real", "select_real")}}


def gpu_rules():
    """The rules that ask for a GPU (rules/resources.smk's gpu_resources): their wall time is GPU time."""
    return sorted(r.name for r in workflow.rules if "gpu" in r.resources)
