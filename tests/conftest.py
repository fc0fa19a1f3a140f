"""Shared test setup: offline hub, quiet progress bars, and a sandbox to run the DAG in."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("SERS_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One compute thread per test process, as the tests' workflow runs give every job (LOCAL_RUN): three
# workers share two cores, and torch's default of one thread per core spent ~30 % more CPU (spin-waiting
# OpenMP threads) for the same wall time even with the machine to itself.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
# the methods of the paper preset; the tiny run (config/tiny.yaml) runs all but sers-noreg
ALL_METHODS = ("seq", "replay", "ssr", "sers", "mtl", "sers-noreg", "sers-nose", "sers-icl")
BASELINE_METHODS = ("replay-kmeans", "ewc", "l2", "lwf", "olora")
TINY_RUN_METHODS = tuple(m for m in ALL_METHODS if m != "sers-noreg")
# the rules that ask SLURM for a GPU (rules/resources.smk); every other rule runs on a CPU
GPU_RULES = frozenset({"synthesize", "train_first_stage", "train_stage", "task_similarity", "label_rehearsal",
                       "evaluate", "train_mtl", "fisher"})
# How the tests run the workflow locally. `--max-threads 1`: every job computes on one thread, so two
# jobs share the two cores; the rules' `threads` (8 for GPU rules) would otherwise give each GPU job
# both cores, and the tiny run's ~100 jobs, nearly all Python start-up (one thread), would run one at
# a time. Snakemake's default ILP scheduler runs a CBC solve every scheduling round (110 in the tiny
# run); the greedy one picks the same jobs here (no resource limits) without it.
LOCAL_RUN = ("--cores", "2", "--max-threads", "1", "--scheduler", "greedy")
LINKED = ("Snakefile", "rules", "workflow", "config", "data", "src", "profiles", "report")


class Workflow:
    """The repository's workflow linked into a temporary folder, so runs leave the checkout alone."""

    def __init__(self, root: Path):
        self.root = root
        for name in LINKED:
            (root / name).symlink_to(REPO / name)

    def write_config(self, name: str, data: dict) -> str:
        path = self.root / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return name

    def snakemake(self, *args: str, check: bool = True, timeout: int = 900,
                  run_args: tuple[str, ...] = LOCAL_RUN) -> subprocess.CompletedProcess:
        proc = subprocess.run([SNAKEMAKE, *run_args, *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-6000:]}")
        return proc

    def planned_jobs(self, *args: str) -> list[tuple[str, dict]]:
        """(rule, wildcards) of every job a dry-run plans."""
        return self.parse_planned_jobs(self.snakemake("-n", *args))

    @staticmethod
    def parse_planned_jobs(proc: subprocess.CompletedProcess) -> list[tuple[str, dict]]:
        """(rule, wildcards) of every job in a dry-run's output."""
        jobs, rule = [], None
        for line in (proc.stdout + proc.stderr).splitlines():
            m = re.match(r"^(?:local)?rule (\S+):$", line.strip())
            if m:
                if rule is not None:
                    jobs.append((rule, {}))
                rule = m.group(1)
                continue
            m = re.match(r"^wildcards: (.*)$", line.strip())
            if m and rule is not None:
                wc = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
                jobs.append((rule, wc))
                rule = None
            elif line.strip().startswith("jobid:") or not line.strip():
                continue
        if rule is not None:
            jobs.append((rule, {}))
        return jobs


@pytest.fixture
def workflow_dir(tmp_path) -> Workflow:
    return Workflow(tmp_path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Workflow:
    """One finished run of the tiny configuration, shared by the DAG tests that only read it."""
    wf = Workflow(tmp_path_factory.mktemp("tiny-run"))
    wf.snakemake("--configfile", "config/tiny.yaml")
    return wf


def pytest_collection_modifyitems(config, items):
    """The slow files first, so pytest-xdist (`--no-loadscope-reorder`, see the Makefile) starts the SLURM
    test (mostly waiting on the cluster), the tiny DAG run and the kill-and-resume runs at once on the
    three workers and the unit tests fill what is left, rather than one worker ending alone."""
    first = {"test_slurm_cluster.py": 0, "test_dag.py": 1, "test_resume.py": 2}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))


_YIELDED: list[bool] = []


@pytest.fixture(autouse=True)
def _yield_the_cpu_to_the_tiny_dag_run(request):
    """The tiny DAG run and the tests that follow it on its worker are the suite's critical path (the
    worker that ends last); every other test process lowers its CPU priority once, so that run gets the
    cores first and the rest fill what it leaves."""
    if request.path.name != "test_dag.py" and not _YIELDED:
        os.nice(10)
        _YIELDED.append(True)
    yield
