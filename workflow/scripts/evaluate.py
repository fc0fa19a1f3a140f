"""Greedy predictions of one model (θ0, a stage's θt, or the multi-task model) on one task's eval rows."""
from sers.data import read_rows
from sers.evaluation import eval_sample, evaluate_rows
from sers.generation import resolve_shared_prefix
from sers.io import write_json, write_jsonl
from sers.workflow import load_adapted, load_base, script_context

with script_context(snakemake.log[0]) as log:
    p, m, e = snakemake.params, snakemake.params.model, snakemake.params.eval
    if snakemake.input.adapter:
        model, tok = load_adapted(m, snakemake.input.adapter[0])
    else:
        model, tok = load_base(m)
    rows = eval_sample(read_rows(snakemake.input.eval, p.max_line_bytes), e["max_rows"], p.seed)
    predictions, summary = evaluate_rows(model, tok, rows, m["prompt_format"], m["max_prompt_tokens"],
                                         e["max_new_tokens"], e["batch_size"],
                                         resolve_shared_prefix(p.shared_prefix, next(model.parameters()).device))
    wc = snakemake.wildcards
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
    log.info("%s on %s: ROUGE-L %.2f ± %.2f (%d rows)", wc.modeldir, wc.evaltask, summary["rouge_l_mean"],
             summary["rouge_l_se"], summary["n_rows"])
