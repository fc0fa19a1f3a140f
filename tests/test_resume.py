"""Resuming after SIGKILL: a run killed during synthesis, training and evaluation, then resumed, equals an
uninterrupted run of the same targets. A file of its own, so that a worker other than test_dag.py's (the
tiny DAG run, the suite's critical path) runs it, in the CPU that run leaves idle."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import LOCAL_RUN, SNAKEMAKE, Workflow

TINY = ("--configfile", "config/tiny.yaml")
# a pseudo set, a labelled rehearsal set, and the scores of a second-stage model: every GPU step but the
# similarity, without the other models' evaluations
KILL_TARGETS = ("results/tiny/pseudo/mask/sa/selected.jsonl", "results/tiny/order1/sers/stage1-sa/rehearsal.jsonl",
                "results/tiny/order1/seq/stage2-pe/eval")
COMPARED = KILL_TARGETS[:2] + ("results/tiny/order1/seq/stage2-pe/eval/pe.json",
                               "results/tiny/order1/seq/stage2-pe/eval/pe.jsonl",
                               "results/tiny/order1/seq/stage2-pe/adapter/adapter_model.safetensors")


def start(wf: Workflow, *args: str) -> subprocess.Popen:
    return subprocess.Popen([SNAKEMAKE, *LOCAL_RUN, *KILL_TARGETS, *args, *TINY], cwd=wf.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_when_started(wf: Workflow, proc: subprocess.Popen, log_dir: str, timeout: float = 240) -> None:
    """SIGKILL the whole run (Snakemake and its jobs) as soon as a job of the given kind starts."""
    deadline = time.time() + timeout
    logs = wf.root / "results/tiny/logs" / log_dir
    while time.time() < deadline:
        if logs.exists() and any(p.stat().st_size for p in logs.rglob("*.log")):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before a {log_dir} job started")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"no {log_dir} job started within {timeout}s")


@pytest.mark.slow
def test_sigkilled_runs_resume_to_the_uninterrupted_result(tmp_path):
    """Kill during synthesis, training and evaluation; the resumed run equals an uninterrupted one in
    another folder, byte for byte (so this is also the determinism check of two runs on CPU)."""
    (tmp_path / "killed").mkdir()
    (tmp_path / "whole").mkdir()
    killed, whole = Workflow(tmp_path / "killed"), Workflow(tmp_path / "whole")
    for stage in ("synthesize", "train", "evaluate"):
        proc = start(killed, "--rerun-incomplete")
        kill_when_started(killed, proc, stage)
        subprocess.run([SNAKEMAKE, "--unlock", *TINY], cwd=killed.root, check=True, capture_output=True)
    killed.snakemake(*KILL_TARGETS, "--rerun-incomplete", *TINY)
    whole.snakemake(*KILL_TARGETS, *TINY)
    for target in COMPARED:
        assert (killed.root / target).read_bytes() == (whole.root / target).read_bytes(), target
    # a killed job leaves no trusted artifact: nothing half-written under a final name
    for path in (killed.root / "results").rglob("*"):
        if path.suffix == ".jsonl" and path.is_file():
            for line in path.read_text().splitlines():
                json.loads(line)
