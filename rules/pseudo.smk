# Pseudo-sample pipeline per task (METHOD.md §1–3): seeds → raw → filtered → embeddings → selected.
# It depends only on θ0 and the task's seeds, so every task runs in parallel, before stage 1. Only tasks
# some later stage rehearses get one (`rehearsed_tasks`): the last task of every order needs none.
# {kind} is "mask" (SERS masked infilling) or "icl" (SSR's 2-shot input+output synthesis).
# On a cluster the CPU steps of one task's chain (filter → embed → select) are one group: one SLURM job.


rule synthesize:
    input:
        seeds=lambda wc: data_file(config, wc.task, "seeds"),
        model=model_input(),
    output:
        raw=f"{PSEUDO}/{{kind}}/{{task}}/raw.jsonl",
    log:
        f"{RUN}/logs/synthesize/{{kind}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/synthesize/pseudo/{{kind}}/{{task}}.tsv"
    threads: 8
    resources:
        **gpu_resources(mem_mb=32000, runtime=240),
    params:
        mode=lambda wc: synthesis_mode(wc.kind),
        settings=config["synthesis"],
        model=model_params(),
        max_line_bytes=config["data"]["max_line_bytes"],
        seed=lambda wc: derive_seed(config["seed"], "synthesize", wc.kind, wc.task),
    script:
        "../workflow/scripts/synthesize.py"


rule filter_pseudo:
    input:
        raw=rules.synthesize.output.raw,
        model=model_input(),
    output:
        filtered=f"{PSEUDO}/{{kind}}/{{task}}/filtered.jsonl",
        dropped=f"{PSEUDO}/{{kind}}/{{task}}/dropped.jsonl",
        summary=f"{PSEUDO}/{{kind}}/{{task}}/filter_summary.json",
    log:
        f"{RUN}/logs/filter/{{kind}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/filter_pseudo/pseudo/{{kind}}/{{task}}.tsv"
    group:
        "pseudo_chain"
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    params:
        thresholds=lambda wc: filter_settings(config, wc.kind, wc.task),
        model=model_params(),
        embedder=embedder_params(),
    script:
        "../workflow/scripts/filter_pseudo.py"


rule embed_pseudo:
    input:
        filtered=rules.filter_pseudo.output.filtered,
    output:
        embeddings=f"{PSEUDO}/{{kind}}/{{task}}/embeddings.npy",
    log:
        f"{RUN}/logs/embed/{{kind}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/embed_pseudo/pseudo/{{kind}}/{{task}}.tsv"
    group:
        "pseudo_chain"
    threads: 4
    resources:
        **cpu_resources(mem_mb=8000, runtime=60),
    params:
        embedder=embedder_params(),
        embed_text=lambda wc: selection_settings(config, wc.kind)["embed_text"],
    script:
        "../workflow/scripts/embed_pseudo.py"


rule select_pseudo:
    input:
        filtered=rules.filter_pseudo.output.filtered,
        embeddings=rules.embed_pseudo.output.embeddings,
    output:
        selected=f"{PSEUDO}/{{kind}}/{{task}}/selected.jsonl",
        summary=f"{PSEUDO}/{{kind}}/{{task}}/selection.json",
    log:
        f"{RUN}/logs/select/{{kind}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/select_pseudo/pseudo/{{kind}}/{{task}}.tsv"
    group:
        "pseudo_chain"
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    params:
        memory=lambda wc: selection_settings(config, wc.kind)["memory"],
        n_clusters=lambda wc: selection_settings(config, wc.kind)["n_clusters"],
        quota=lambda wc: selection_settings(config, wc.kind)["quota"],
        seed=lambda wc: derive_seed(config["seed"], "select", wc.kind, wc.task),
    script:
        "../workflow/scripts/select_pseudo.py"
