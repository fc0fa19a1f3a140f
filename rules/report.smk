# What users read: the cross-method table, the plots, the LLaMA-Factory export, and the HTML report
# (`snakemake --report report.html`), every figure with a caption, grouped by category.


rule summarize_methods:
    input:
        unpack(summary_inputs),
    output:
        csv=report(f"{RUN}/summary/methods.csv", category="Metrics", caption="../report/methods.rst"),
        markdown=f"{RUN}/summary/methods.md",
        comparisons=f"{RUN}/summary/comparisons.json",
    log:
        f"{RUN}/logs/summarize_methods.log",
    benchmark:
        f"{BENCHMARKS}/summarize_methods.tsv"
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        runs=comparison_runs(),
        replicate_groups=REPLICATE_GROUPS,
        stats=config["stats"],
        seed=derive_seed(config["seed"], "bootstrap"),
    script:
        "../workflow/scripts/summarize_methods.py"


rule plots:
    input:
        unpack(plot_inputs),
    output:
        heatmaps=report(
            directory(f"{RUN}/summary/plots/heatmaps"),
            patterns=["{name}.png"],
            category="Score matrices",
            caption="../report/heatmap.rst",
        ),
        curves=report(
            directory(f"{RUN}/summary/plots/forgetting"),
            patterns=["{name}.png"],
            category="Forgetting curves",
            caption="../report/forgetting.rst",
        ),
        similarity=report(
            f"{RUN}/summary/plots/similarity.png", category="Task similarity", caption="../report/similarity.rst"
        ),
        funnel=report(f"{RUN}/summary/plots/funnel.png", category="Pseudo samples", caption="../report/funnel.rst"),
        differences=report(
            f"{RUN}/summary/plots/differences.png", category="Metrics", caption="../report/differences.rst"
        ),
        projections=report(
            directory(f"{RUN}/summary/plots/projections"),
            patterns=["{name}.png"],
            category="Pseudo samples",
            caption="../report/projection.rst",
        ),
        done=touch(f"{RUN}/summary/plots.done"),
    log:
        f"{RUN}/logs/plots.log",
    benchmark:
        f"{BENCHMARKS}/plots.tsv"
    params:
        orders=ORDERS,
        methods=config["methods"],
        tasks=rehearsed_tasks(),
        kinds=pseudo_kinds(),
        embedder=embedder_params(),
        embed_text=config["selection"]["embed_text"],
    script:
        "../workflow/scripts/plots.py"


rule export_llamafactory:
    input:
        list(rehearsal_exports().values()),
    output:
        dataset_info=f"{RUN}/export/dataset_info.json",
    log:
        f"{RUN}/logs/export_llamafactory.log",
    benchmark:
        f"{BENCHMARKS}/export_llamafactory.tsv"
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        names=list(rehearsal_exports()),
    script:
        "../workflow/scripts/export_llamafactory.py"


# Where the run's time and memory went: every job's record (its `benchmark:` file under BENCHMARKS) per
# rule and per method (docs/resources.md). It comes last (its inputs are every other artifact), so every
# record exists; it keeps no record of its own, which would be the previous run's.
rule resource_usage:
    input:
        run_targets(),
    output:
        by_rule=report(f"{RUN}/summary/resources_by_rule.csv", category="Resources", caption="../report/resources.rst"),
        by_method=report(
            f"{RUN}/summary/resources_by_method.csv", category="Resources", caption="../report/resources.rst"
        ),
        markdown=f"{RUN}/summary/resources.md",
    log:
        f"{RUN}/logs/resource_usage.log",
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        records=BENCHMARKS,
        methods=usage_methods(),
        rule_methods=usage_rule_methods(),
        gpu_rules=lambda wc: gpu_rules(),
    script:
        "../workflow/scripts/resource_usage.py"
