"""Train one stage's LoRA adapter (or the multi-task model) on task rows plus rehearsal rows."""
from sers.io import read_json
from sers.rehearsal import rehearsal_rows, task_rows
from sers.training import TrainRow, train_stage
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
    baseline = p.baseline if snakemake.rule == "train_stage" else None
    if baseline and baseline["kind"] == "ewc":  # the previous task's Fisher (the `fisher` rule)
        baseline = {**baseline, "fisher": inputs.fisher[0]}
    summary = train_stage(
        m["path"], snakemake.output.adapter, rows, prev_adapter=previous, lam=lam,
        lambda_min=p.similarity["lambda_min"], only_above_min=p.similarity["only_above_min"],
        lora_r=t["lora_r"], lora_alpha=t["lora_alpha"], lora_dropout=t["lora_dropout"],
        target_modules=t["target_modules"], lr=t["lr"], epochs=t["epochs"], batch_size=t["batch_size"],
        grad_accum=t["grad_accum"], max_grad_norm=t["max_grad_norm"], warmup_ratio=t["warmup_ratio"],
        prompt_format=m["prompt_format"], max_prompt_tokens=m["max_prompt_tokens"],
        max_target_tokens=t["max_target_tokens"], shared_prefix=t["shared_prefix"],
        gradient_checkpointing=t["gradient_checkpointing"], seed=p.seed,
        device=m["device"], dtype=m["dtype"],
        data_notes={"n_rehearsal_empty_labels": replay.n_empty, "rehearsal_empty_labels": replay.empty_labels},
        **({"penalty_anchor": p.penalty["anchor"], "penalty_reduction": p.penalty["reduction"],
            "penalty_scale": p.penalty["scale"], "baseline": baseline} if snakemake.rule == "train_stage" else {}),
    )
    log.info("trained on %d rows (%d replay), lambda %.4f: %s", len(rows), sum(r.is_replay for r in rows), lam, summary)
