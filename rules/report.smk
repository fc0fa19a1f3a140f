# What users read: the cross-method table, the plots, the LLaMA-Factory export, and the HTML report
# (`snakemake --report report.html`), every figure with a caption, grouped by category.


def summary_inputs(wildcards):
    return {
        "metrics": metrics_targets(),
        "matrices": [f"{RUN}/{o}/{m}/matrix.csv" for o in config["orders"] for m in config["methods"]],
    }


rule summarize_methods:
    input:
        unpack(summary_inputs),
    output:
        csv=report(f"{RUN}/summary/methods.csv", category="Metrics", caption="../report/methods.rst"),
        markdown=f"{RUN}/summary/methods.md",
    log:
        f"{RUN}/logs/summarize_methods.log",
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    script:
        "../workflow/scripts/summarize_methods.py"


def plot_inputs(wildcards):
    kinds = pseudo_kinds()
    tasks = all_tasks(config)
    sims = [f"{stage_dir(o, m, t)}/similarity.json" for o, ts in config["orders"].items()
            for m in sequential_methods() if m in PENALTY_METHODS for t in range(2, len(ts) + 1)]
    return {
        "metrics": metrics_targets(),
        "similarity": sims,
        "filter_summaries": [f"{PSEUDO}/{k}/{t}/filter_summary.json" for k in kinds for t in tasks],
        "selections": [f"{PSEUDO}/{k}/{t}/selection.json" for k in kinds for t in tasks],
        "embeddings": [f"{PSEUDO}/{k}/{t}/embeddings.npy" for k in kinds for t in tasks],
        "selected": [f"{PSEUDO}/{k}/{t}/selected.jsonl" for k in kinds for t in tasks],
        "rehearsal": list(rehearsal_exports().values()),
        "seeds": [data_file(config, t, "seeds") for t in tasks],
    }


rule plots:
    input:
        unpack(plot_inputs),
    output:
        heatmaps=report(directory(f"{RUN}/summary/plots/heatmaps"), patterns=["{name}.png"],
                        category="Score matrices", caption="../report/heatmap.rst"),
        curves=report(directory(f"{RUN}/summary/plots/forgetting"), patterns=["{name}.png"],
                      category="Forgetting curves", caption="../report/forgetting.rst"),
        similarity=report(f"{RUN}/summary/plots/similarity.png", category="Task similarity",
                          caption="../report/similarity.rst"),
        funnel=report(f"{RUN}/summary/plots/funnel.png", category="Pseudo samples", caption="../report/funnel.rst"),
        projections=report(directory(f"{RUN}/summary/plots/projections"), patterns=["{name}.png"],
                           category="Pseudo samples", caption="../report/projection.rst"),
        done=touch(f"{RUN}/summary/plots.done"),
    params:
        orders=config["orders"],
        methods=config["methods"],
        tasks=all_tasks(config),
        kinds=pseudo_kinds(),
        embedder=embedder_params(),
    log:
        f"{RUN}/logs/plots.log",
    script:
        "../workflow/scripts/plots.py"


rule export_llamafactory:
    input:
        list(rehearsal_exports().values()),
    output:
        dataset_info=f"{RUN}/export/dataset_info.json",
    params:
        names=list(rehearsal_exports()),
    log:
        f"{RUN}/logs/export_llamafactory.log",
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    script:
        "../workflow/scripts/export_llamafactory.py"
