# sers: SERS continual instruction-tuning as a Snakemake DAG.
#   snakemake -n                      the plan for config/config.yaml
#   snakemake --cores 2               run it here (make run)
#   snakemake --profile profiles/slurm   send the GPU rules to a SLURM cluster
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/experiment.smk"
include: "rules/paths.smk"
include: "rules/params.smk"
include: "rules/inputs.smk"
include: "rules/targets.smk"
include: "rules/resources.smk"
include: "rules/models.smk"
include: "rules/pseudo.smk"
include: "rules/stages.smk"
include: "rules/evaluation.smk"
include: "rules/report.smk"


onstart:
    # only a real run needs the full data: a dry-run (and --lint, --report) still plans on the sample
    try:
        check_data_sizes(config, "config", FULL_DATA_HINT)
    except SersError as error:
        raise WorkflowError(str(error)) from None


localrules:
    all,
    plots,
    metrics,
    real_rehearsal,
    real_pool,
    resource_usage,


rule all:
    default_target: True
    input:
        all_targets(),
