"""replay-kmeans: the real training rows of one task (the rows its stage trains on) that k-means selects from."""
from sers.io import write_jsonl
from sers.rehearsal import task_rows
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    rows = task_rows(snakemake.input.train, p.max_rows, p.seed, p.max_line_bytes)
    write_jsonl(snakemake.output.pool, [{**r.to_dict(), "task": snakemake.wildcards.task, "label_source": "real"}
                                        for r in rows])
    log.info("%d real training rows in the pool", len(rows))
