# Evaluation of every stage's model on the eval split of the tasks seen so far (all tasks with
# eval.all_tasks), θ0 on every task (eval.base, the FWT baseline), and the metrics per method.
# {modeldir} is "base", "mtl/stage1-all", "{order}/stage1-{task}" (the shared first stage) or
# "{order}/{method}/stage{t}-{task}".


wildcard_constraints:
    modeldir=r"base|mtl/stage1-all|[A-Za-z0-9][A-Za-z0-9_.-]*/([a-z][a-z0-9-]*/)?stage\d+-[A-Za-z0-9][A-Za-z0-9_.-]*",
    evaltask=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


rule evaluate:
    input:
        model=model_input(),
        adapter=evaluated_adapter,
        eval=lambda wc: data_file(config, wc.evaltask, "eval"),
    output:
        predictions=f"{RUN}/{{modeldir}}/eval/{{evaltask}}.jsonl",
        summary=f"{RUN}/{{modeldir}}/eval/{{evaltask}}.json",
    log:
        f"{RUN}/logs/eval/{{modeldir}}/{{evaltask}}.log",
    resources:
        **gpu_resources(mem_mb=32000, runtime=120, cpus=8),
    params:
        eval=config["eval"],
        model=model_params(),
        max_line_bytes=config["data"]["max_line_bytes"],
        shared_prefix=config["training"]["shared_prefix"],
        seed=lambda wc: derive_seed(config["seed"], "eval", wc.evaltask),
    script:
        "../workflow/scripts/evaluate.py"


rule metrics:
    input:
        summaries=lambda wc: eval_summaries(wc.order, wc.method),
        predictions=lambda wc: eval_predictions(wc.order, wc.method),
    output:
        metrics=f"{RUN}/{{order}}/{{method}}/metrics.json",
        matrix=f"{RUN}/{{order}}/{{method}}/matrix.csv",
    log:
        f"{RUN}/logs/metrics/{{order}}-{{method}}.log",
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        order=lambda wc: ORDERS[wc.order],
        need_all=config["eval"]["all_tasks"],
        need_base=config["eval"]["base"],
    script:
        "../workflow/scripts/metrics.py"
