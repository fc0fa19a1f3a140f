"""Build the tiny random LLaMA (and its byte-level BPE tokenizer) from the shipped data."""
from sers.data import read_rows
from sers.models import build_tiny_model
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    rows = [r for path in snakemake.input for r in read_rows(path, p.max_line_bytes)]
    texts = [r.full_prompt + "\n" + r.output for r in rows]
    t = p.tiny
    build_tiny_model(texts, snakemake.output[0], hidden_size=t["hidden_size"], layers=t["layers"],
                     heads=t["heads"], vocab_size=t["vocab_size"], seed=p.seed)
    log.info("tiny model built from %d texts", len(texts))
