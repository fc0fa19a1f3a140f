# Evaluation of every stage's model on the eval split of the tasks seen so far (all tasks with
# eval.all_tasks), θ0 on every task (eval.base, the FWT baseline), and the metrics per method.
# One `evaluate` job per model (one model load) generates for all its tasks; one `score_eval` job per
# model (ROUGE-L of a few hundred rows per task) writes its eval/ folder: each task's per-row predictions
# ({task}.jsonl) and summary ({task}.json). Scoring is a rule of its own and generation does not read the
# scorer's settings, so a scorer change (eval.rouge) or changed references rescore without regenerating.
# On a cluster a model's `evaluate` and `score_eval` jobs are one group: one SLURM job, one queue wait.
# {modeldir} is "base", "mtl/stage1-all", "{order}/stage1-{task}" (the shared first stage) or
# "{order}/{method}/stage{t}-{task}".


wildcard_constraints:
    modeldir=r"base|mtl/stage1-all|[A-Za-z0-9][A-Za-z0-9_.-]*/([a-z][a-z0-9-]*/)?stage\d+-[A-Za-z0-9][A-Za-z0-9_.-]*",


rule evaluate:
    input:
        model=model_input(),
        adapter=evaluated_adapter,
        # ancient: the eval prompts' digests (params) decide when generations are stale, so a file
        # whose references alone change reruns only `score_eval`
        eval=lambda wc: [ancient(eval_file(t)) for t in model_eval_tasks(wc.modeldir)],
    output:
        generations=f"{RUN}/{{modeldir}}/eval_generations.jsonl",
    log:
        f"{RUN}/logs/evaluate/{{modeldir}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/{{modeldir}}.tsv"
    group:
        "evaluation"
    threads: 8
    resources:
        **gpu_resources(mem_mb=32000, runtime=240),
    params:
        tasks=lambda wc: model_eval_tasks(wc.modeldir),
        digests=lambda wc: {t: eval_digest(t) for t in model_eval_tasks(wc.modeldir)},
        seeds=lambda wc: {t: eval_seed(t) for t in model_eval_tasks(wc.modeldir)},
        # all of `eval` but the scorer: changing eval.rouge reruns `score_eval` only, not generation
        eval={k: v for k, v in config["eval"].items() if k != "rouge"},
        model=model_params(),
        max_line_bytes=config["data"]["max_line_bytes"],
        shared_prefix=config["training"]["shared_prefix"],
    script:
        "../workflow/scripts/evaluate.py"


rule score_eval:
    input:
        generations=f"{RUN}/{{modeldir}}/eval_generations.jsonl",
        eval=lambda wc: [eval_file(t) for t in model_eval_tasks(wc.modeldir)],
    output:
        scores=directory(f"{RUN}/{{modeldir}}/eval"),
    log:
        f"{RUN}/logs/score/{{modeldir}}.log",
    benchmark:
        f"{BENCHMARKS}/score_eval/{{modeldir}}.tsv"
    group:
        "evaluation"
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        tasks=lambda wc: model_eval_tasks(wc.modeldir),
        seeds=lambda wc: {t: eval_seed(t) for t in model_eval_tasks(wc.modeldir)},
        max_rows=config["eval"]["max_rows"],
        rouge=config["eval"]["rouge"],
        max_line_bytes=config["data"]["max_line_bytes"],
    script:
        "../workflow/scripts/score_eval.py"


rule metrics:
    input:
        evaluations=lambda wc: eval_dirs(wc.order, wc.method),
    output:
        metrics=f"{RUN}/{{order}}/{{method}}/metrics.json",
        matrix=f"{RUN}/{{order}}/{{method}}/matrix.csv",
    log:
        f"{RUN}/logs/metrics/{{order}}-{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/metrics/{{order}}/{{method}}.tsv"
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        # the files in those folders, stage by stage (eval_summaries)
        summaries=lambda wc: eval_summaries(wc.order, wc.method),
        predictions=lambda wc: eval_predictions(wc.order, wc.method),
        order=lambda wc: ORDERS[wc.order],
        need_all=config["eval"]["all_tasks"],
        need_base=config["eval"]["base"],
    script:
        "../workflow/scripts/metrics.py"
