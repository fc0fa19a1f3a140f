"""Self-evolution's mechanism on real rows: label held-back real training rows of the stage's task as its
pseudo inputs are labelled, and score the labels against the real outputs (sers.evolution)."""
import dataclasses
import random

from sers.data import read_rows
from sers.evolution import EvolutionSettings, probe_against_references
from sers.forward import resolve_shared_prefix
from sers.io import write_json
from sers.workflow import load_adapted, script_context

with script_context(snakemake.log[0]) as log:
    p, m = snakemake.params, snakemake.params.model
    fields = {f.name for f in dataclasses.fields(EvolutionSettings)}
    settings = EvolutionSettings(**{k: v for k, v in p.evolution.items() if k in fields})
    # held back: real rows of the task's replay file that are neither training rows nor seeds
    seen = {r.id for key in ("train", "seeds") for r in read_rows(snakemake.input[key], p.max_line_bytes)}
    pool = [r for r in read_rows(snakemake.input.held_back, p.max_line_bytes) if r.id not in seen]
    rows = [r.to_dict() for r in random.Random(p.seed).sample(pool, min(p.rows, len(pool)))]
    model, tok = load_adapted(m, snakemake.input.adapter)
    shared = resolve_shared_prefix(p.shared_prefix, next(model.parameters()).device)
    probe = probe_against_references(model, tok, rows, settings, m["prompt_format"], m["max_prompt_tokens"], shared)
    write_json(snakemake.output.probe, {"held_back_pool": len(pool), **probe})
    log.info("%d held-back rows: %d evolved, %d changed; ROUGE-L vs real on the changed rows %s (θt) → %s (kept)",
             probe["n_rows"], probe["n_evolved"], probe["n_changed"], probe["rouge_theta_t_changed"],
             probe["rouge_label_changed"])
