"""Convert the GGUF file a package carries into a plain model folder (once; atomic)."""
from sers.models import convert_gguf
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    convert_gguf(snakemake.params.package, snakemake.output[0])
    log.info("converted %s into %s", snakemake.params.package, snakemake.output[0])
