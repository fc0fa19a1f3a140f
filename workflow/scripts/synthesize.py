"""Raw pseudo inputs of one task from its seeds with θ0."""
import dataclasses

from sers.data import read_rows
from sers.io import write_jsonl
from sers.synthesis import SynthesisSettings, synthesize
from sers.workflow import load_base, script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    seeds = read_rows(snakemake.input.seeds, p.max_line_bytes)
    fields = {f.name for f in dataclasses.fields(SynthesisSettings)}
    settings = SynthesisSettings(**{k: v for k, v in p.settings.items() if k in fields})
    model, tokenizer = load_base(p.model)
    rows = synthesize(model, tokenizer, snakemake.wildcards.task, seeds, p.mode, settings, p.seed)
    write_jsonl(snakemake.output.raw, rows)
    log.info("%d raw pseudo rows (%s mode) from %d seeds", len(rows), p.mode, len(seeds))
