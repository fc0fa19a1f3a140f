"""Label one task's selected pseudo inputs with θt; re-decode the hardest with the θ0/θt blend."""
import dataclasses

from sers.evolution import EvolutionSettings, label_rows, rehearsal_summary
from sers.forward import resolve_shared_prefix
from sers.generation import fit_batch_size
from sers.io import read_jsonl, write_json, write_jsonl
from sers.workflow import load_adapted, script_context

with script_context(snakemake.log[0]) as log:
    p, m = snakemake.params, snakemake.params.model
    fields = {f.name for f in dataclasses.fields(EvolutionSettings)}
    settings = EvolutionSettings(**{k: v for k, v in p.evolution.items() if k in fields})
    model, tok = load_adapted(m, snakemake.input.adapter)
    rows = read_jsonl(snakemake.input.selected)
    shared = resolve_shared_prefix(p.shared_prefix, next(model.parameters()).device)
    # on CUDA as many rows per batch as the free memory holds (a blend batch holds each row twice)
    settings = dataclasses.replace(settings, batch_size=fit_batch_size(
        model, m["max_prompt_tokens"], settings.max_new_tokens, settings.batch_size, copies=2))
    labelled = label_rows(model, tok, rows, settings, m["prompt_format"], m["max_prompt_tokens"], shared)
    write_jsonl(snakemake.output.rehearsal, labelled)
    summary = rehearsal_summary(labelled)
    write_json(snakemake.output.summary, summary)
    log.info("labelled %d rows, %d evolved with the blend", len(labelled), summary["n_evolved"])
    if summary["n_empty_label"]:
        log.warning("%d rows have an empty label; training leaves them out: %s", summary["n_empty_label"],
                    summary["empty_label_ids"])
