"""Train one stage's LoRA adapter (or the multi-task model) on task rows plus rehearsal rows."""
from sers.io import read_json
from sers.regularisers import stage_regularisers
from sers.rehearsal import rehearsal_rows, task_rows
from sers.training import DataMix, TrainRow, stage_spec, train_stage
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p, m, t = snakemake.params, snakemake.params.model, snakemake.params.training
    inputs = snakemake.input
    if snakemake.rule == "train_mtl":  # every task's training rows at once, no rehearsal
        train_files, seeds = list(inputs.train), p.train_seeds
        previous, rehearsal, similarity = None, [], []
    elif snakemake.rule == "train_first_stage":  # task 1 alone, shared by every method
        train_files, seeds = [inputs.train], [p.train_seed]
        previous, rehearsal, similarity = None, [], []
    else:
        train_files, seeds = [inputs.train], [p.train_seed]
        previous = inputs.previous[0]
        rehearsal, similarity = list(inputs.rehearsal), list(inputs.similarity)
    rows = [TrainRow(r.full_prompt, r.output, False)
            for path, seed in zip(train_files, seeds) for r in task_rows(path, p.max_train_rows, seed, p.max_line_bytes)]
    replay = rehearsal_rows(rehearsal)
    if replay.n_empty:
        log.warning("%d rehearsal rows have an empty label and are left out: %s", replay.n_empty,
                    replay.empty_labels)
    rows += [TrainRow(r["full_prompt"], r["output"], True) for r in replay.rows]
    lam = read_json(similarity[0])["lambda"] if similarity else 0.0
    stage = snakemake.rule == "train_stage"  # a later stage of a method (its penalty shape, its baseline)
    baseline = p.baseline if stage else None
    if baseline and baseline["kind"] == "ewc":  # the previous task's Fisher (the `fisher` rule)
        baseline = {**baseline, "fisher": inputs.fisher[0]}
    spec = stage_spec(m, t, previous, p.seed)
    data = DataMix(rows, m["prompt_format"], m["max_prompt_tokens"], t["max_target_tokens"],
                   notes={"n_rehearsal_empty_labels": replay.n_empty, "rehearsal_empty_labels": replay.empty_labels})
    regularisers = stage_regularisers(lam, p.similarity, p.penalty if stage else None, baseline)
    summary = train_stage(spec, data, snakemake.output.adapter, regularisers)
    log.info("trained on %d rows (%d replay), lambda %.4f: %s", len(rows), sum(r.is_replay for r in rows), lam, summary)
