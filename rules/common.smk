# The config: loaded, validated, and the constants every rule file uses (the run folder, the orders).
# Included first. The other shared files each have one job:
#   experiment.smk  which tasks, methods and models the configured experiment has
#   paths.smk       where each artifact lies under the run folder
#   params.smk      the settings a rule passes to its script
#   inputs.smk      input functions: a job's wildcards → the files it reads
#   targets.smk     what `all` and the report rules ask for
#   resources.smk   threads, memory, run time and GPUs per rule (local runs and SLURM)
# Rules only wire; the logic is in src/sers, and the scripts in workflow/scripts adapt
# snakemake.input/params/output to it.
import sys
from pathlib import Path

# src/ beside rules/: found from either entry point (Snakefile or workflow/Snakefile)
sys.path.insert(0, str(Path(workflow.current_basedir).parent / "src"))

from sers.config import (
    apply_user_experiment,
    check_data_files,
    check_data_sizes,
    validate_config,
)
from sers.errors import SersError

FULL_DATA_HINT = (
    "Build the full data from a Super-NaturalInstructions checkout with "
    "`make data SUPERNI=/path/to/natural-instructions OUT=data/ni-c012`, then run with a layer file "
    "that says `data: {dir: data/ni-c012}` (`--configfile full-data.yaml`; docs/data.md)."
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


wildcard_constraints:
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    kind=r"mask|icl",
    order=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    method=r"[a-z][a-z0-9-]*",
    stage=r"\d+",
