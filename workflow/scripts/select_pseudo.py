"""k-means selection of `memory` pseudo inputs of one task."""
import numpy as np

from sers.io import read_jsonl, write_json, write_jsonl
from sers.selection import select_by_kmeans
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    rows = read_jsonl(snakemake.input.filtered)
    emb = np.load(snakemake.input.embeddings, allow_pickle=False)
    chosen, summary = select_by_kmeans(emb, p.n_clusters, p.memory, p.seed, p.quota)
    write_jsonl(snakemake.output.selected, [rows[i] for i in chosen])
    write_json(snakemake.output.summary, summary)
    if summary["kept_all"]:
        log.warning("%s", summary["note"])
    log.info("selected %d of %d", summary["n_selected"], summary["n_input"])
