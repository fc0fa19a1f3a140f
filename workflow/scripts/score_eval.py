"""ROUGE-L of one model's generations on every task it is evaluated on: its eval/ folder, with each task's
per-row prediction file ({task}.jsonl) and summary ({task}.json)."""
from sers.data import read_rows
from sers.evaluation import eval_sample, score_rows
from sers.io import atomic_path, read_jsonl, write_json, write_jsonl
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p, wc = snakemake.params, snakemake.wildcards
    generations: dict = {}
    for g in read_jsonl(snakemake.input.generations):
        generations.setdefault(g["task"], []).append(g)
    parts = wc.modeldir.split("/")
    if wc.modeldir == "base":
        where = {"order": None, "method": "base", "stage": 0, "stage_task": "base"}
    elif parts[0] == "mtl":
        where = {"order": None, "method": "mtl", "stage": 1, "stage_task": "all"}
    else:  # {order}/stage1-{task} (shared first stage) or {order}/{method}/stage{t}-{task}
        stage, _, stage_task = parts[-1].removeprefix("stage").partition("-")
        where = {"order": parts[0], "method": parts[1] if len(parts) == 3 else None, "stage": int(stage),
                 "stage_task": stage_task}
    with atomic_path(snakemake.output.scores, is_dir=True) as out:  # the folder appears whole or not at all
        for task, path in zip(p.tasks, snakemake.input.eval):
            rows = eval_sample(read_rows(path, p.max_line_bytes), p.max_rows, p.seeds[task])
            predictions, summary = score_rows(rows, generations.get(task, []),
                                              f"{snakemake.input.generations} ({task})", p.rouge)
            write_jsonl(out / f"{task}.jsonl", predictions)
            write_json(out / f"{task}.json", {**where, "task": task, **summary})
            log.info("%s on %s: ROUGE-L (%s) %.2f ± %.2f (%d rows)", wc.modeldir, task, p.rouge,
                     summary["rouge_l_mean"], summary["rouge_l_se"], summary["n_rows"])
