"""Register every labelled rehearsal set in LLaMA-Factory's dataset_info.json format."""
from sers.export import write_dataset_info
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    sets = dict(zip(snakemake.params.names, snakemake.input))
    write_dataset_info(sets, snakemake.output.dataset_info, split_prompt=False)
    log.info("exported %d rehearsal sets", len(sets))
