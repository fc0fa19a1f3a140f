"""Label one task's selected pseudo inputs with θt; re-decode the hardest with the θ0/θt blend."""
import dataclasses

from sers.evolution import EvolutionSettings, label_rows
from sers.io import read_jsonl, write_jsonl
from sers.workflow import load_adapted, script_context

with script_context(snakemake.log[0]) as log:
    p, m = snakemake.params, snakemake.params.model
    fields = {f.name for f in dataclasses.fields(EvolutionSettings)}
    settings = EvolutionSettings(**{k: v for k, v in p.evolution.items() if k in fields})
    model, tok = load_adapted(m, snakemake.input.adapter)
    rows = read_jsonl(snakemake.input.selected)
    labelled = label_rows(model, tok, rows, settings, m["chat_template"], m["max_prompt_tokens"], p.shared_prefix)
    write_jsonl(snakemake.output.rehearsal, labelled)
    log.info("labelled %d rows, %d evolved with the blend", len(labelled), sum(r["evolved"] for r in labelled))
