# Continual-learning stages (METHOD.md §4–6). For each order and method, stage t trains the one
# LoRA adapter on task t (plus the rehearsal rows of earlier tasks), starting from stage t−1's
# adapter; then task t's selected pseudo inputs are labelled by θt (self-evolution for SERS).
# Stage 1 (task 1 alone, no penalty) is the same for every method: it is trained once per order.


rule real_rehearsal:
    input:
        replay=lambda wc: data_file(config, wc.task, "replay"),
    output:
        rehearsal=f"{RUN}/real/{{task}}/rehearsal.jsonl",
    log:
        f"{RUN}/logs/real_rehearsal/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/real_rehearsal/real/{{task}}.tsv"
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        max_rows=config["data"]["max_replay_rows"],
        max_line_bytes=config["data"]["max_line_bytes"],
        seed=lambda wc: derive_seed(config["seed"], "real-replay", wc.task),
    script:
        "../workflow/scripts/real_rehearsal.py"


rule real_pool:
    input:
        train=lambda wc: data_file(config, wc.task, "train"),
    output:
        pool=f"{RUN}/real-kmeans/{{task}}/pool.jsonl",
    log:
        f"{RUN}/logs/real_pool/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/real_pool/real-kmeans/{{task}}.tsv"
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        max_rows=config["data"]["max_train_rows"],
        max_line_bytes=config["data"]["max_line_bytes"],
        # the rows the task's stage trains on (same sample, same seed)
        seed=lambda wc: derive_seed(config["seed"], "train-rows", wc.task),
    script:
        "../workflow/scripts/real_pool.py"


# replay-kmeans (SSR's KMeansSel): the real rows chosen by the pseudo rows' embed + k-means code
rule embed_real:
    input:
        filtered=rules.real_pool.output.pool,
    output:
        embeddings=f"{RUN}/real-kmeans/{{task}}/embeddings.npy",
    log:
        f"{RUN}/logs/embed_real/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/embed_real/real-kmeans/{{task}}.tsv"
    group:
        "real_chain"
    threads: 4
    resources:
        **cpu_resources(mem_mb=8000, runtime=60),
    params:
        embedder=embedder_params(),
        embed_text=selection_settings(config, "real")["embed_text"],
    script:
        "../workflow/scripts/embed_pseudo.py"


rule select_real:
    input:
        filtered=rules.real_pool.output.pool,
        embeddings=rules.embed_real.output.embeddings,
    output:
        selected=f"{RUN}/real-kmeans/{{task}}/selected.jsonl",
        summary=f"{RUN}/real-kmeans/{{task}}/selection.json",
    log:
        f"{RUN}/logs/select_real/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/select_real/real-kmeans/{{task}}.tsv"
    group:
        "real_chain"
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    params:
        memory=config["data"]["max_replay_rows"],
        n_clusters=selection_settings(config, "real")["n_clusters"],
        quota=selection_settings(config, "real")["quota"],
        seed=lambda wc: derive_seed(config["seed"], "select", "real", wc.task),
    script:
        "../workflow/scripts/select_pseudo.py"


rule task_similarity:
    input:
        model=model_input(),
        previous=previous_adapter,
        train=lambda wc: data_file(config, wc.task, "train"),
        rehearsal=rehearsal_sets,
    output:
        similarity=f"{STAGE_DIR}/similarity.json",
    log:
        f"{RUN}/logs/similarity/{{order}}-{{method}}-stage{{stage}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/task_similarity/{{order}}/{{method}}/stage{{stage}}-{{task}}.tsv"
    threads: 8
    resources:
        **gpu_resources(mem_mb=32000, runtime=60),
    params:
        settings=config["similarity"],
        model=model_params(),
        max_train_rows=config["data"]["max_train_rows"],
        max_target_tokens=config["training"]["max_target_tokens"],
        max_line_bytes=config["data"]["max_line_bytes"],
        seed=lambda wc: derive_seed(config["seed"], "similarity", wc.order, wc.stage),
        train_seed=lambda wc: derive_seed(config["seed"], "train-rows", wc.task),
    script:
        "../workflow/scripts/task_similarity.py"


rule train_first_stage:
    input:
        model=model_input(),
        train=lambda wc: data_file(config, wc.task, "train"),
    output:
        adapter=directory(f"{RUN}/{{order}}/stage1-{{task}}/adapter"),
    log:
        f"{RUN}/logs/train/{{order}}-stage1-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/train_first_stage/{{order}}/stage1-{{task}}.tsv"
    threads: 8
    resources:
        **gpu_resources(mem_mb=64000, runtime=720),
    params:
        training=lambda wc: training_settings(config, wc.order, None, 1),
        similarity=config["similarity"],
        model=model_params(),
        max_train_rows=config["data"]["max_train_rows"],
        max_line_bytes=config["data"]["max_line_bytes"],
        seed=lambda wc: derive_seed(config["seed"], "train", wc.order, 1),
        train_seed=lambda wc: derive_seed(config["seed"], "train-rows", wc.task),
    script:
        "../workflow/scripts/train_stage.py"


rule train_stage:
    input:
        model=model_input(),
        previous=previous_adapter,
        train=lambda wc: data_file(config, wc.task, "train"),
        rehearsal=rehearsal_sets,
        similarity=similarity_input,
        fisher=fisher_input,
    output:
        adapter=directory(f"{STAGE_DIR}/adapter"),
    log:
        f"{RUN}/logs/train/{{order}}-{{method}}-stage{{stage}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/train_stage/{{order}}/{{method}}/stage{{stage}}-{{task}}.tsv"
    wildcard_constraints:
        stage=r"[2-9]|[1-9]\d+",
    threads: 8
    resources:
        **gpu_resources(mem_mb=64000, runtime=720),
    params:
        training=lambda wc: training_settings(config, wc.order, wc.method, int(wc.stage)),
        similarity=config["similarity"],
        model=model_params(),
        max_train_rows=config["data"]["max_train_rows"],
        max_line_bytes=config["data"]["max_line_bytes"],
        penalty=lambda wc: penalty_params(wc.method),
        baseline=lambda wc: baseline_params(wc.method),
        # the same seed for every method (batch order, LoRA dropout): methods differ only by design
        seed=lambda wc: derive_seed(config["seed"], "train", wc.order, wc.stage),
        train_seed=lambda wc: derive_seed(config["seed"], "train-rows", wc.task),
    script:
        "../workflow/scripts/train_stage.py"


# EWC: after a stage, the diagonal Fisher of its adapter on its task's training rows
rule fisher:
    input:
        model=model_input(),
        adapter=stage_adapter,
        train=lambda wc: data_file(config, wc.task, "train"),
    output:
        fisher=f"{STAGE_DIR}/fisher.safetensors",
        summary=f"{STAGE_DIR}/fisher.json",
    log:
        f"{RUN}/logs/fisher/{{order}}-{{method}}-stage{{stage}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/fisher/{{order}}/{{method}}/stage{{stage}}-{{task}}.tsv"
    threads: 8
    resources:
        **gpu_resources(mem_mb=32000, runtime=120),
    params:
        fisher_rows=config["baselines"]["ewc"]["fisher_rows"],
        model=model_params(),
        max_train_rows=config["data"]["max_train_rows"],
        max_line_bytes=config["data"]["max_line_bytes"],
        max_target_tokens=config["training"]["max_target_tokens"],
        seed=lambda wc: derive_seed(config["seed"], "fisher", wc.task),
        train_seed=lambda wc: derive_seed(config["seed"], "train-rows", wc.task),
    script:
        "../workflow/scripts/fisher.py"


rule label_rehearsal:
    input:
        model=model_input(),
        adapter=stage_adapter,
        selected=lambda wc: f"{PSEUDO}/{pseudo_kind(wc.method)}/{wc.task}/selected.jsonl",
    output:
        rehearsal=f"{STAGE_DIR}/rehearsal.jsonl",
        summary=f"{STAGE_DIR}/rehearsal_summary.json",
    log:
        f"{RUN}/logs/label/{{order}}-{{method}}-stage{{stage}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/label_rehearsal/{{order}}/{{method}}/stage{{stage}}-{{task}}.tsv"
    threads: 8
    resources:
        **gpu_resources(mem_mb=32000, runtime=240),
    params:
        evolution=evolution_params,
        model=model_params(),
        shared_prefix=config["training"]["shared_prefix"],
    script:
        "../workflow/scripts/label_rehearsal.py"


# A diagnostic (diagnostics.evolution_probe_rows > 0): held-back real rows of the task labelled as its
# pseudo inputs are, scored against their real outputs: does self-evolution move labels toward the truth?
rule evolution_probe:
    input:
        model=model_input(),
        adapter=stage_adapter,
        held_back=lambda wc: data_file(config, wc.task, "replay"),
        train=lambda wc: data_file(config, wc.task, "train"),
        seeds=lambda wc: data_file(config, wc.task, "seeds"),
    output:
        probe=f"{STAGE_DIR}/evolution_probe.json",
    log:
        f"{RUN}/logs/evolution_probe/{{order}}-{{method}}-stage{{stage}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/evolution_probe/{{order}}/{{method}}/stage{{stage}}-{{task}}.tsv"
    threads: 8
    resources:
        **gpu_resources(mem_mb=32000, runtime=120),
    params:
        evolution=evolution_params,
        rows=config["diagnostics"]["evolution_probe_rows"],
        model=model_params(),
        shared_prefix=config["training"]["shared_prefix"],
        max_line_bytes=config["data"]["max_line_bytes"],
        seed=lambda wc: derive_seed(config["seed"], "evolution-probe", wc.task),
    script:
        "../workflow/scripts/evolution_probe.py"


rule train_mtl:
    input:
        model=model_input(),
        train=[data_file(config, t, "train") for t in mtl_tasks()],
    output:
        adapter=directory(f"{RUN}/mtl/stage1-all/adapter"),
    log:
        f"{RUN}/logs/train/mtl.log",
    benchmark:
        f"{BENCHMARKS}/train_mtl/mtl/stage1-all.tsv"
    threads: 8
    resources:
        **gpu_resources(mem_mb=64000, runtime=1440),
    params:
        training=training_settings(config, None, "mtl", None),
        similarity=config["similarity"],
        model=model_params(),
        max_train_rows=config["data"]["max_train_rows"],
        max_line_bytes=config["data"]["max_line_bytes"],
        seed=derive_seed(config["seed"], "train", "mtl"),
        train_seeds=[derive_seed(config["seed"], "train-rows", t) for t in mtl_tasks()],
    script:
        "../workflow/scripts/train_stage.py"
