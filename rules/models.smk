# The base model θ0 as an artifact: the packaged GGUF converted once into a plain folder, or a tiny
# random LLaMA for tests. A folder is only trusted once its completion marker exists.


rule convert_gguf_model:
    output:
        directory(f"{config['model']['cache_dir']}/{config['model']['gguf_package']}"),
    log:
        f"{RUN}/logs/convert_gguf_model.log",
    benchmark:
        f"{BENCHMARKS}/convert_gguf_model.tsv"
    threads: 2
    resources:
        **cpu_resources(mem_mb=4000, runtime=30),
    params:
        package=config["model"]["gguf_package"],
    script:
        "../workflow/scripts/convert_gguf_model.py"


rule build_tiny_model:
    input:
        [data_file(config, t, "seeds") for t in all_tasks(config)],
    output:
        directory(f"{config['model']['cache_dir']}/tiny-llama"),
    log:
        f"{RUN}/logs/build_tiny_model.log",
    benchmark:
        f"{BENCHMARKS}/build_tiny_model.tsv"
    resources:
        **cpu_resources(mem_mb=2000, runtime=10),
    params:
        tiny=config["model"]["tiny"],
        seed=config["seed"],
        max_line_bytes=config["data"]["max_line_bytes"],
    script:
        "../workflow/scripts/build_tiny_model.py"
