"""Every figure of the report: matrices, forgetting curves, W/λ, the pseudo-sample funnel and the
2-D view of selected pseudo inputs beside the real seeds."""
from pathlib import Path

import numpy as np
import pandas as pd

from sers.data import read_rows
from sers.io import read_json, read_jsonl
from sers.plots import (
    plot_differences,
    plot_forgetting_curves,
    plot_funnel,
    plot_matrix_heatmap,
    plot_pseudo_vs_seeds,
    plot_similarity,
)
from sers.selection import embed_texts, embedder_path, load_embedder, text_to_embed
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    matrices: dict = {}
    for path in inp.metrics:
        m = read_json(path)
        matrices.setdefault(m["order"], {})[m["method"]] = pd.read_csv(Path(path).with_name("matrix.csv"), index_col=0)
    for d in (out.heatmaps, out.curves, out.projections):
        Path(d).mkdir(parents=True, exist_ok=True)
    for order, by_method in matrices.items():
        for method, matrix in by_method.items():
            plot_matrix_heatmap(matrix, f"{out.heatmaps}/{order}-{method}.png", f"{order} · {method}: ROUGE-L")
        plot_forgetting_curves({m: df for m, df in by_method.items() if m != "mtl"}, f"{out.curves}/{order}.png")
    plot_similarity([read_json(s) for s in inp.similarity], out.similarity)
    plot_differences(read_json(inp.comparisons), out.differences)

    def rows_of(files, task, kind):
        return [f for f in files if f"/{kind}/{task}/" in f]

    funnel = {}
    evolved: dict = {}  # (kind, task) -> rows re-decoded by self-evolution (sers, or sers-icl for ICL inputs)
    for path in inp.rehearsal:
        rows = read_jsonl(path)
        for kind, method in (("mask", "/sers/"), ("icl", "/sers-icl/")):
            if rows and method in path:
                evolved.setdefault((kind, rows[0]["task"]), sum(r["evolved"] for r in rows))
    encoder = None
    for kind in p.kinds:  # masked infilling (SERS) and ICL (SSR) each get their funnel
        for task in p.tasks:
            f = read_json(rows_of(inp.filter_summaries, task, kind)[0])
            s = read_json(rows_of(inp.selections, task, kind)[0])
            funnel[f"{task} ({kind})"] = {"raw": f["raw"], "filtered": f["kept"], "selected": s["n_selected"],
                                         "evolved": evolved.get((kind, task)),
                                         "dropped_by_reason": f["dropped_by_reason"]}
    kind = p.kinds[0] if p.kinds else None
    for task, seeds_path in zip(p.tasks, inp.seeds):
        if kind is None:
            break
        selected = read_jsonl(rows_of(inp.selected, task, kind)[0])
        emb = np.load(rows_of(inp.embeddings, task, kind)[0], allow_pickle=False)
        filtered = read_jsonl(str(Path(rows_of(inp.selected, task, kind)[0]).with_name("filtered.jsonl")))
        index = {r["id"]: i for i, r in enumerate(filtered)}
        chosen = emb[[index[r["id"]] for r in selected]] if selected else emb[:0]
        if encoder is None:
            e = p.embedder
            encoder = load_embedder(embedder_path(e["source"], e["package"], e["path"]), max_seq_length=e["max_seq_length"])
        seed_rows = [r.to_dict() for r in read_rows(seeds_path)]
        seeds = embed_texts(encoder, [text_to_embed(r, p.embed_text) for r in seed_rows], p.embedder["batch_size"])
        plot_pseudo_vs_seeds(chosen, seeds, f"{out.projections}/{task}.png",
                             f"{task}: {len(chosen)} selected pseudo inputs vs {len(seeds)} real seeds")
    if funnel:
        plot_funnel(funnel, out.funnel)
    else:
        plot_funnel({"(no pseudo samples)": {"raw": 0, "filtered": 0, "selected": 0, "dropped_by_reason": {}}},
                    out.funnel)
    log.info("plots written")
