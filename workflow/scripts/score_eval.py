"""ROUGE-L of one model's generations on one task: the per-row prediction file and the task's summary."""
from sers.data import read_rows
from sers.evaluation import eval_sample, score_rows
from sers.io import read_jsonl, write_json, write_jsonl
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p, wc = snakemake.params, snakemake.wildcards
    rows = eval_sample(read_rows(snakemake.input.eval, p.max_line_bytes), p.max_rows, p.seed)
    generations = [g for g in read_jsonl(snakemake.input.generations) if g["task"] == wc.evaltask]
    predictions, summary = score_rows(rows, generations, f"{snakemake.input.generations} ({wc.evaltask})",
                                      p.rouge)
    parts = wc.modeldir.split("/")
    if wc.modeldir == "base":
        where = {"order": None, "method": "base", "stage": 0, "stage_task": "base"}
    elif parts[0] == "mtl":
        where = {"order": None, "method": "mtl", "stage": 1, "stage_task": "all"}
    else:  # {order}/stage1-{task} (shared first stage) or {order}/{method}/stage{t}-{task}
        stage, _, stage_task = parts[-1].removeprefix("stage").partition("-")
        where = {"order": parts[0], "method": parts[1] if len(parts) == 3 else None, "stage": int(stage),
                 "stage_task": stage_task}
    write_jsonl(snakemake.output.predictions, predictions)
    write_json(snakemake.output.summary, {**where, "task": wc.evaltask, **summary})
    log.info("%s on %s: ROUGE-L (%s) %.2f ± %.2f (%d rows)", wc.modeldir, wc.evaltask, p.rouge,
             summary["rouge_l_mean"], summary["rouge_l_se"], summary["n_rows"])
