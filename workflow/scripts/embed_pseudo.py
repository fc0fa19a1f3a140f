"""Sentence embeddings (L2-normalised) of one task's filtered pseudo inputs (or instruction + input)."""
import numpy as np

from sers.io import atomic_path, read_jsonl
from sers.models import pick_device
from sers.selection import embed_texts, embedder_path, load_embedder, text_to_embed
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    e = snakemake.params.embedder
    encoder = load_embedder(embedder_path(e["source"], e["package"], e["path"]), str(pick_device()), e["max_seq_length"])
    rows = read_jsonl(snakemake.input.filtered)
    emb = embed_texts(encoder, [text_to_embed(r, snakemake.params.embed_text) for r in rows], e["batch_size"])
    with atomic_path(snakemake.output.embeddings) as tmp, open(tmp, "wb") as f:
        np.save(f, emb, allow_pickle=False)
    log.info("embedded %d inputs -> %s", len(rows), emb.shape)
