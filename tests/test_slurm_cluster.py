"""`snakemake --profile profiles/slurm` against a real (throw-away, single-node) SLURM cluster.

The cluster test needs root + apt and is opt-in outside CI:
    SERS_SLURM_TESTS=1 .venv/bin/python -m pytest -q tests/test_slurm_cluster.py
(CI=true turns it on; SERS_SLURM_TESTS=0 turns it off.) It takes ~1 min when the packages are
installed, ~15 s more on a fresh machine. See tests/slurm/cluster.py for what it sets up.

To run another workflow through the same checks, add a WorkflowCase to SLURM_CASES.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GPU_RULES

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent


def _load_harness():
    # Loaded by path: works whether or not tests/ is a package.
    name = "sers_tests_slurm_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "slurm" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
slurm_cluster = harness.slurm_cluster
run_with_profile = harness.run_with_profile

TOY_SNAKEFILE = HERE / "slurm" / "toy" / "Snakefile"

# The plugin waits 40 s (its default, sensible on a real cluster) before the first status check
# of newly submitted jobs, then backs off by +10 s per round without a finished job:
# checks at t0+N, +N+10, +N+20, ... A toy job takes ~5 s (mostly Snakemake starting inside the
# job), and sacct shows it a moment after it ends, so N=1 finds it at ~12 s; N=6 at 22 s.
FAST_STATUS_CHECKS = ["--slurm-init-seconds-before-status-checks", "1", "--scheduler", "greedy"]


@dataclasses.dataclass
class WorkflowCase:
    id: str
    snakefile: Path
    slurm_rules: set           # rules that must each have run as (at least) one SLURM job
    gpu_rules: set             # the subset that must have requested and been given a GPU
    extra_args: list = dataclasses.field(default_factory=list)
    timeout: float = 240
    setup: object = None      # callable(workdir) that prepares the working directory
    job_counts: dict = dataclasses.field(default_factory=dict)  # SLURM jobs (from sacct) per rule or group


PIPELINE_GPU_RULES = GPU_RULES - {"train_mtl", "fisher"}  # the tiny pipeline has no mtl and no ewc
# What SLURM runs: a group ("evaluation": a model's `evaluate` + its `score_eval` job; "pseudo_chain":
# one task's filter → embed → select) is one SLURM job, named after the group; `metrics` is local.
PIPELINE_GROUPS = {"evaluation", "pseudo_chain"}
PIPELINE_GPU_JOBS = PIPELINE_GPU_RULES - {"evaluate"} | {"evaluation"}
PIPELINE_CPU_JOBS = {"build_tiny_model", "pseudo_chain", "summarize_methods"}
# One compute thread per job, as the local test runs (conftest.LOCAL_RUN): the jobs share two cores with
# the tiny DAG run, and OpenMP threads spin-waiting on them cost that run CPU. Snakemake passes
# --max-threads on into each job. The toy case checks that a rule's threads reach its job.
ONE_THREAD_PER_JOB = ["--max-threads", "1"]


def setup_pipeline(workdir: Path) -> None:
    """The real workflow on the tiny model, one method, two tasks: every kind of rule, few jobs."""
    for name in ("config", "data"):
        (workdir / name).symlink_to(REPO_ROOT / name)
    (workdir / "slurm-case.yaml").write_text(
        "run: slurm\nmethods: [sers]\neval: {base: false, all_tasks: false}\n", encoding="utf-8")


SLURM_CASES = [
    WorkflowCase(
        id="toy",
        snakefile=TOY_SNAKEFILE,
        slurm_rules={"prepare", "train"},
        gpu_rules={"train"},
    ),
    WorkflowCase(
        id="pipeline",
        snakefile=REPO_ROOT / "Snakefile",
        slurm_rules=PIPELINE_GPU_JOBS | PIPELINE_CPU_JOBS,  # `all`, `plots`, `metrics` are local rules
        gpu_rules=PIPELINE_GPU_JOBS,
        # two tasks, one method, up to the methods table: 2 evaluated models (stage 1, stage 2 of sers) and
        # the pseudo chain of sa, the one stage 2 rehearses (pe's, for a third stage, is left out: time)
        job_counts={"evaluation": 2, "pseudo_chain": 1, "synthesize": 1},
        extra_args=["results/slurm/summary/methods.md", "--configfile", "config/tiny.yaml", "slurm-case.yaml",
                    *ONE_THREAD_PER_JOB],
        timeout=900,
        setup=setup_pipeline,
    ),
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node SLURM cluster for this module (skips when not possible/opted in)."""
    with slurm_cluster(keep_logs=tmp_path_factory.mktemp("slurm-daemon-logs")) as cluster:
        yield cluster


def check_slurm_records(records, case: WorkflowCase, cluster):
    """Assert from sacct that the case's rules ran as SLURM jobs and only GPU rules got GPUs."""
    by_rule = {}
    for r in records:
        by_rule.setdefault(r["rule"], []).append(r)
    summary = "\n".join(
        f"  {r['JobID']:>5} {r['rule']!s:<16} {r['State']:<10} {r['Partition']:<10} "
        f"{r['Account']:<16} {r['AllocTRES']}"
        for r in records
    )
    assert set(by_rule) == case.slurm_rules, (
        f"rules run as SLURM jobs: {sorted(by_rule, key=str)}, expected {sorted(case.slurm_rules)} "
        f"(local rules must not be submitted)\n{summary}"
    )
    for rule, recs in by_rule.items():
        # retries may add failed attempts; the last attempt must have succeeded
        last = recs[-1]
        assert last["State"] == "COMPLETED" and last["ExitCode"] == "0:0", summary
        for r in recs:
            assert r["Partition"] == cluster.partition, summary  # from SERS_SLURM_PARTITION
            assert r["Account"] == cluster.account, summary      # from SERS_SLURM_ACCOUNT
            if rule in case.gpu_rules:
                assert r["req_gpus"] >= 1 and r["gpus"] >= 1, f"{rule} got no GPU\n{summary}"
                assert r["alloc_tres"].get(f"gres/gpu:{cluster.gpu_model}", 0) >= 1, summary
                assert f"--gpus={cluster.gpu_model}:" in r["SubmitLine"], r["SubmitLine"]
            else:
                assert r["req_gpus"] == 0 and r["gpus"] == 0, f"{rule} got a GPU\n{summary}"
                assert "--gpus" not in r["SubmitLine"], r["SubmitLine"]


def check_gpu_visibility(records, case: WorkflowCase, cluster):
    """Every task (batch script and srun step) of a GPU job saw CUDA_VISIBLE_DEVICES; no CPU job did.

    Uses the cluster's TaskProlog log, so it needs nothing from the workflow itself.
    """
    task_env = cluster.task_env()
    for r in records:
        tasks = task_env.get(r["JobID"], [])
        assert tasks, f"no TaskProlog record for job {r['JobID']} ({r['rule']})"
        for t in tasks:
            visible = t.get("CUDA_VISIBLE_DEVICES", "<unset>")
            if r["rule"] in case.gpu_rules:
                assert visible not in ("", "<unset>"), f"{r['rule']} job {r['JobID']}: {t}"
            else:
                assert visible in ("", "<unset>"), f"{r['rule']} job {r['JobID']}: {t}"


def check_toy_details(records, case: WorkflowCase, workdir: Path):
    """Toy-only checks: the jobs' own view, the resource mapping, and retry scaling."""
    for r in records:
        if r["State"] != "COMPLETED":
            continue
        # the echoed line (anchored: printshellcmds also logs the command itself)
        m = re.search(r"^job_env SLURM_JOB_ID=(\S*) CUDA_VISIBLE_DEVICES=(\S*) OMP_NUM_THREADS=(\S*) "
                      r"nproc=(\d+)$", r["log"], re.MULTILINE)
        assert m, f"no job_env line in the SLURM log of {r['rule']}:\n{r['log'][-2000:]}"
        assert m.group(1) == r["JobID"]
        assert (m.group(2) != "") == (r["rule"] in case.gpu_rules), m.group(0)
        # the rule's threads reach the job's OpenMP (capped at the CPUs the job can run on)
        threads = 8 if r["rule"] == "train" else 1
        assert m.group(3) == str(min(threads, int(m.group(4)))), m.group(0)
    trained = (workdir / "results" / "trained.txt").read_text()
    assert "CUDA_VISIBLE_DEVICES=0" in trained, trained

    # threads: 8 + gpu_resources() defaults -> --cpus-per-task=8 --mem 16000 -t 240 --gpus=a100:1
    (train,) = [r for r in records if r["rule"] == "train"]
    assert train["alloc_tres"]["cpu"] == 8 and "mem=16000M" in train["AllocTRES"], train
    assert train["Timelimit"] == "04:00:00", train["Timelimit"]
    # prepare fails on attempt 1 (profile: retries) and is resubmitted with 2x memory and runtime
    attempts = [r for r in records if r["rule"] == "prepare"]
    assert [r["State"] for r in attempts] == ["FAILED", "COMPLETED"], attempts
    assert [r["alloc_tres"]["mem"] for r in attempts] == [200, 400], attempts
    assert [r["Timelimit"] for r in attempts] == ["00:05:00", "00:10:00"], attempts
    assert all(r["alloc_tres"]["cpu"] == 1 for r in attempts), attempts


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("case", SLURM_CASES, ids=lambda c: c.id)
def test_profile_runs_workflow_on_slurm(slurm, case, tmp_path):
    if case.setup is not None:
        case.setup(tmp_path)
    started = time.monotonic()
    records = run_with_profile(
        tmp_path, case.snakefile, [*FAST_STATUS_CHECKS, *case.extra_args], case.timeout,
        env=slurm.env,
    )
    elapsed = time.monotonic() - started
    for r in records:  # the plugin names a group job "<group>_<its rules>": count it under the group
        r["slurm_name"] = r["rule"]
        r["rule"] = next((g for g in PIPELINE_GROUPS if str(r["rule"]).startswith(f"{g}_")), r["rule"])
    check_slurm_records(records, case, slurm)
    check_gpu_visibility(records, case, slurm)
    # the profile's per-rule SLURM log folders, one log per job (successful logs are kept)
    for r in records:
        assert r["log_file"] is not None, f"no SLURM log for job {r['JobID']}"
        kind = "group" if r["rule"] in PIPELINE_GROUPS else "rule"
        assert f"/logs/slurm/{kind}_{r['slurm_name']}/" in str(r["log_file"]), r["log_file"]
    for name, count in case.job_counts.items():
        assert sum(r["rule"] == name and r["State"] == "COMPLETED" for r in records) == count, name

    if case.id == "toy":
        check_toy_details(records, case, tmp_path)
    if case.id == "pipeline":  # each job of a group job keeps its own resource record (docs/resources.md)
        bench = tmp_path / "results/slurm/benchmarks"
        for rule in ("evaluate", "score_eval"):
            assert {p.name for p in (bench / rule / "order1").rglob("*.tsv")} == {"stage1-sa.tsv", "stage2-pe.tsv"}
        for rule in ("filter_pseudo", "embed_pseudo", "select_pseudo"):
            assert (bench / rule / "pseudo/mask/sa.tsv").is_file(), rule
    print(f"\n[{case.id}] snakemake --profile profiles/slurm: {elapsed:.1f}s; "
          f"cluster setup {slurm.timings}; jobs:")
    for r in records:
        print(f"  {r['JobID']} {r['rule']} {r['State']} {r['Elapsed']} {r['AllocTRES']}")


# ---------------------------------------------------------------------------------------------
# No cluster needed: the resource helpers, and that GPU rules still run locally with --cores.


def _load_resources(config):
    """Execute rules/resources.smk (plain Python) with a given `config`."""
    namespace = {"config": config}
    exec(compile((REPO_ROOT / "rules" / "resources.smk").read_text(), "resources.smk", "exec"),
         namespace)
    return namespace


def test_resource_helpers_scale_with_attempt():
    ns = _load_resources({"slurm": {"gpu_model": "h100"}})
    gpu = ns["gpu_resources"](mem_mb=1000, runtime=10)
    # no cpus_per_task: a rule's CPUs are its `threads`, which the plugin submits as --cpus-per-task
    assert set(gpu) == {"gpu", "gpu_model", "mem_mb", "runtime"}
    assert gpu["gpu"] == 1 and gpu["gpu_model"] == "h100"
    assert [gpu["mem_mb"](None, a) for a in (1, 2, 3)] == [1000, 2000, 3000]
    assert [gpu["runtime"](None, a) for a in (1, 2, 3)] == [10, 20, 30]
    cpu = ns["cpu_resources"]()
    assert set(cpu) == {"mem_mb", "runtime"}
    assert (cpu["mem_mb"](None, 1), cpu["runtime"](None, 2)) == (4000, 60)
    default = _load_resources({"slurm": {}})["gpu_resources"]()
    assert default["gpu_model"] == "a100" and default["mem_mb"](None, 1) == 16000
    assert "gpu_model" not in _load_resources({"slurm": {"gpu_model": None}})["gpu_resources"]()


def test_toy_workflow_runs_locally_without_gpu_resource_flag(tmp_path):
    """A rule with gpu=1 runs under plain `--cores 2` (no --resources gpu=..., no SLURM).

    (--retries 1: the toy's `prepare` fails its first attempt on purpose.)
    """
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(TOY_SNAKEFILE),
         "--directory", str(tmp_path), "--cores", "2", "--retries", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "results" / "trained.txt").exists()
    assert "gpu=1" in proc.stdout + proc.stderr  # the GPU rule really carried the resource
