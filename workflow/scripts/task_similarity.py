"""W (sliced Wasserstein-1 between new-task and rehearsal hidden states under θt−1) and λ."""
from sers.io import write_json
from sers.rehearsal import rehearsal_rows, task_rows
from sers.similarity import pooled_ids, task_similarity
from sers.workflow import load_adapted, script_context

with script_context(snakemake.log[0]) as log:
    p, m = snakemake.params, snakemake.params.model
    s = p.settings
    model, tok = load_adapted(m, snakemake.input.previous[0])

    def encode(full_prompt: str, output: str) -> list[int]:
        return pooled_ids(tok, full_prompt, output, m["prompt_format"], s["pooling"], m["max_prompt_tokens"],
                          p.max_target_tokens)

    new = [encode(r.full_prompt, r.output)
           for r in task_rows(snakemake.input.train, p.max_train_rows, p.train_seed, p.max_line_bytes)]
    rehearsal = rehearsal_rows(list(snakemake.input.rehearsal))
    if rehearsal.n_empty:
        log.warning("%d rehearsal rows have an empty label and are left out: %s", rehearsal.n_empty,
                    rehearsal.empty_labels)
    replay = [encode(r["full_prompt"], r["output"]) for r in rehearsal.rows]
    if not replay:  # e.g. every pseudo input of the earlier tasks was filtered out
        result = {"W": None, "lambda": s["lambda_min"], "n_new": len(new), "n_replay": 0, "tau": s["tau"],
                  "lambda_min": s["lambda_min"], "lambda_max": s["lambda_max"],
                  "note": "no rehearsal rows to compare with: lambda set to lambda_min"}
        log.warning("%s", result["note"])
    else:
        result = task_similarity(model, tok, new, replay, max_rows=s["max_rows"],
                                 n_projections=s["n_projections"], n_quantiles=s["n_quantiles"],
                                 lambda_min=s["lambda_min"], lambda_max=s["lambda_max"], tau=s["tau"], seed=p.seed)
    result.update(order=snakemake.wildcards.order, method=snakemake.wildcards.method,
                  stage=int(snakemake.wildcards.stage), task=snakemake.wildcards.task, pooling=s["pooling"],
                  n_rehearsal_empty_labels=rehearsal.n_empty)
    write_json(snakemake.output.similarity, result)
    log.info("W = %s, lambda = %.4f", result["W"], result["lambda"])
