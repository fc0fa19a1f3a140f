"""Greedy generations of one model (θ0, a stage's θt, or the multi-task model) on every task it is
evaluated on: the model is loaded once; each task's rows are scored by `score_eval` afterwards."""
from sers.data import read_rows
from sers.errors import SersError
from sers.evaluation import eval_sample, predict_rows, sample_digest
from sers.forward import resolve_shared_prefix
from sers.io import write_jsonl
from sers.workflow import load_adapted, load_base, script_context

with script_context(snakemake.log[0]) as log:
    p, m, e = snakemake.params, snakemake.params.model, snakemake.params.eval
    if snakemake.input.adapter:
        model, tok = load_adapted(m, snakemake.input.adapter[0])
    else:
        model, tok = load_base(m)
    share = resolve_shared_prefix(p.shared_prefix, next(model.parameters()).device)
    generations = []
    for task, path in zip(p.tasks, snakemake.input.eval):
        rows = eval_sample(read_rows(path, p.max_line_bytes), e["max_rows"], p.seeds[task])
        if sample_digest(rows) != p.digests[task]:  # the plan was made from another version of the file
            raise SersError(f"{path} changed while the workflow ran; run snakemake again")
        out = predict_rows(model, tok, rows, m["prompt_format"], m["max_prompt_tokens"], e["max_new_tokens"],
                           e["batch_size"], share)
        generations += [{"task": task, **g} for g in out]
        log.info("%s: %d generations on %s", snakemake.wildcards.modeldir, len(out), task)
    write_jsonl(snakemake.output.generations, generations)
