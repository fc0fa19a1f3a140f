# Resource helpers for rules, shared by local runs and the SLURM profile (profiles/slurm).
#
# Include this file AFTER the config has been loaded (it reads config["slurm"]["gpu_model"]):
#
#     configfile: "config/config.yaml"
#     include: "rules/resources.smk"
#
#     (in a rule named train)
#         ...
#         threads: 8
#         resources:
#             **gpu_resources(mem_mb=32000, runtime=480),
#
# What the keys mean to the SLURM executor plugin (snakemake-executor-plugin-slurm):
#   threads: C            ->  sbatch --cpus-per-task=C
#   gpu=N + gpu_model=M   ->  sbatch --gpus=M:N   (gpu alone -> --gpus=N)
#   mem_mb=X              ->  sbatch --mem X          (megabytes)
#   runtime=T             ->  sbatch -t T             (minutes)
# A rule's CPUs are its `threads`, not a `cpus_per_task` resource: Snakemake exports the threads as
# OMP_NUM_THREADS (and MKL_/OPENBLAS_NUM_THREADS) into the job, so torch, the tokenizers and
# scikit-learn compute on every CPU SLURM gave it. With `cpus_per_task` alone a job held 8 CPUs and
# computed on one. Locally the threads are capped at `--cores` (and at `--max-threads`).
# Partition and account are NOT set here: they are cluster/user specific and live in the profile
# (profiles/slurm/config.yaml, via SERS_SLURM_PARTITION / SERS_SLURM_ACCOUNT).
#
# mem_mb and runtime are callables of the attempt number (1, 2, 3, ...), so a job that SLURM
# killed for running out of memory or time is retried (profile: `retries`) with 2x, 3x the request.
#
# Local runs (`snakemake --cores N`, no executor): Snakemake only enforces resources that are
# given a limit with `--resources`, plus cores. `gpu`, `gpu_model`, `mem_mb` and `runtime` are
# therefore just annotations locally and need no `--resources gpu=...`. A user who wants to
# serialise GPU jobs on a one-GPU workstation can still pass `--resources gpu=1`.


def _scaled(base):
    """Resource callable: `base` on the first attempt, `base * attempt` on retries."""
    base = int(base)

    def by_attempt(wildcards, attempt):
        return base * attempt

    return by_attempt


def _gpu_model():
    slurm_cfg = config.get("slurm") or {}
    # An empty / null gpu_model means "any GPU type": the plugin then asks for --gpus=N.
    return slurm_cfg.get("gpu_model", "a100")


def cpu_resources(mem_mb=4000, runtime=30):
    """Resources for a CPU-only rule: `resources: **cpu_resources(mem_mb=..., runtime=...)`.

    mem_mb (MB) and runtime (minutes) grow with the attempt number. CPUs: the rule's `threads`.
    """
    return {
        "mem_mb": _scaled(mem_mb),
        "runtime": _scaled(runtime),
    }


def gpu_resources(mem_mb=16000, runtime=240, gpus=1):
    """Resources for a GPU rule: `resources: **gpu_resources(mem_mb=..., runtime=...)`.

    Adds gpu=<gpus> and gpu_model=config["slurm"]["gpu_model"] (-> sbatch --gpus=<model>:<gpus>)
    to cpu_resources(); mem_mb (MB) and runtime (minutes) grow with the attempt number.
    """
    res = cpu_resources(mem_mb=mem_mb, runtime=runtime)
    res["gpu"] = int(gpus)
    model = _gpu_model()
    if model:
        res["gpu_model"] = str(model)
    return res
