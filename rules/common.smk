# Validation, paths and input functions shared by every rule. Rules only wire; the logic is in
# src/sers, and the scripts in workflow/scripts adapt snakemake.input/params/output to it.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from sers.config import all_tasks, check_data_files, data_file, task_filter_settings, validate_config
from sers.errors import SersError
from sers.seeding import derive_seed

try:
    validate_config(config, "config")
    check_data_files(config, "config")
except SersError as _error:
    raise WorkflowError(str(_error)) from None

RUN = f"{config['results_dir']}/{config['run']}"
PSEUDO = f"{RUN}/pseudo"
MASK_METHODS = {"sers", "sers-noreg", "sers-nose"}
ICL_METHODS = {"ssr", "sers-icl"}
SCRIPTS = "workflow/scripts"


wildcard_constraints:
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    kind=r"mask|icl",
    order=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    method=r"[a-z][a-z-]*",
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
    return {"path": model_dir(), "chat_template": m["chat_template"], "trust_remote_code": m["trust_remote_code"],
            "dtype": m["dtype"], "device": config["device"], "max_prompt_tokens": m["max_prompt_tokens"]}


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


def pseudo_targets():
    return [f"{PSEUDO}/{kind}/{task}/selected.jsonl" for kind in pseudo_kinds() for task in all_tasks(config)]


def all_targets():
    return pseudo_targets()
