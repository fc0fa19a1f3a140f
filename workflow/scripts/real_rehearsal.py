"""Real replay baseline: a seeded sample of one task's real training rows (RandSel)."""
from sers.io import write_jsonl
from sers.rehearsal import task_rows
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    rows = task_rows(snakemake.input.replay, p.max_rows, p.seed, p.max_line_bytes)
    write_jsonl(snakemake.output.rehearsal, [{**r.to_dict(), "task": snakemake.wildcards.task,
                                              "label_source": "real"} for r in rows])
    log.info("%d real rehearsal rows", len(rows))
