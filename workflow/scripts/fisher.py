"""EWC: the diagonal Fisher of one stage's adapter on a seeded sample of its task's training rows."""
import random

from sers.rehearsal import task_rows
from sers.training import TrainRow, estimate_fisher
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p, m = snakemake.params, snakemake.params.model
    rows = task_rows(snakemake.input.train, p.max_train_rows, p.train_seed, p.max_line_bytes)
    rows = random.Random(p.seed).sample(rows, min(p.fisher_rows, len(rows)))  # SSR: a shuffled loader's first rows
    summary = estimate_fisher(
        m["path"], snakemake.input.adapter, [TrainRow(r.full_prompt, r.output, False) for r in rows],
        snakemake.output.fisher, prompt_format=m["prompt_format"], max_prompt_tokens=m["max_prompt_tokens"],
        max_target_tokens=p.max_target_tokens, device=m["device"], dtype=m["dtype"],
        notes={"fisher_rows_requested": p.fisher_rows, "seed": p.seed, "train": snakemake.input.train},
    )
    log.info("Fisher on %d rows: sum %.4g, max %.4g", summary["n_rows"], summary["sum"], summary["max"])
