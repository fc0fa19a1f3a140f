"""The plan without running it: the paper preset's dry-run, what a config file plans, replicates,
penalty variants, the start-up refusal of too-small data, and the linters. No DAG is run here, so
these tests share a pytest worker with the slow SLURM test while test_dag.py builds the tiny run."""
from conftest import ALL_METHODS, BASELINE_METHODS, GPU_RULES


def test_paper_preset_plans_every_task_and_method_with_gpus_on_exactly_the_gpu_rules():
    """`snakemake -n --profile profiles/slurm` of the paper preset (one dry-run of its ~3300 jobs serves both
    checks: what it plans, and that GPU requests and CPUs go to the rules that use them)."""
    import re
    import tempfile
    from pathlib import Path

    from conftest import Workflow

    with tempfile.TemporaryDirectory() as d:
        wf = Workflow(Path(d))
        # --cores 64: a dry-run otherwise caps every rule's threads at one core; a SLURM run has no cap
        proc = wf.snakemake("-n", "--profile", "profiles/slurm", "--configfile", "config/experiments/paper-llama2-7b.yaml",
                            run_args=("--cores", "64"))
        jobs = wf.parse_planned_jobs(proc)
    synth = {(w["kind"], w["task"]) for r, w in jobs if r == "synthesize"}
    assert len(synth) == 20  # 10 tasks × {mask, icl}
    trained = {(w["order"], w["method"]) for r, w in jobs if r == "train_stage"}
    methods = [m for m in ALL_METHODS + BASELINE_METHODS if m != "mtl"]
    assert trained == {(o, m) for o in ("order1", "order2", "order3") for m in methods}
    assert sum(r == "train_stage" for r, _ in jobs) == 3 * 12 * 9  # stage 1 is shared by the methods
    assert sum(r == "fisher" for r, _ in jobs) == 3 * 9  # EWC: after every stage but the last
    for rule in ("real_pool", "embed_real", "select_real"):  # replay-kmeans: once per task
        assert sum(r == rule for r, _ in jobs) == 10, rule
    assert sum(r == "train_first_stage" for r, _ in jobs) == 3
    assert sum(r == "train_mtl" for r, _ in jobs) == 1
    # one evaluation job (one model load) per evaluated model: θ0, mtl, 3 shared first stages, 3×12×9 stages
    evaluated = [w["modeldir"] for r, w in jobs if r == "evaluate"]
    assert len(evaluated) == len(set(evaluated)) == 2 + 3 + 3 * 12 * 9
    # one scoring job per model too (its eval/ folder: every task's predictions and summary)
    assert sorted(w["modeldir"] for r, w in jobs if r == "score_eval") == sorted(evaluated)
    assert len(jobs) == 1393  # 4353 when each model scored each task in a job of its own (3290 score_eval)
    gpu, cpu, threads, rule = set(), set(), {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(local)?rule (\S+):$", line.strip())
        if m:
            rule = m.group(2)
            threads.setdefault(rule, set())
        elif line.strip().startswith("threads:") and rule:
            threads[rule].add(int(line.split(":")[1]))
        elif line.strip().startswith("resources:") and rule:
            (gpu if re.search(r"\bgpu=1\b", line) and "gpu_model=a100" in line else cpu).add(rule)
            rule = None
    assert gpu == GPU_RULES
    assert not gpu & cpu and {"filter_pseudo", "select_pseudo", "metrics", "embed_pseudo", "score_eval"} <= cpu
    # threads become the job's --cpus-per-task and OMP_NUM_THREADS (a rule prints none when it has one)
    assert all(threads[r] == {8} for r in GPU_RULES), threads
    assert threads["embed_pseudo"] == threads["embed_real"] == {4}, threads
    assert all(not threads[r] for r in cpu - {"embed_pseudo", "embed_real", "convert_gguf_model"}), threads


def test_penalty_variants_are_methods_of_their_own(workflow_dir):
    # in the same dry-run: the self-evolution probe, for the methods it names, after every rehearsed stage
    cfg = workflow_dir.write_config("variants.yaml", {
        "methods": ["seq", "sers-anchor", "sers-sum"],
        "diagnostics": {"evolution_probe_rows": 4, "evolution_probe_methods": ["sers-anchor"]}})
    jobs = workflow_dir.planned_jobs("--configfile", "config/tiny.yaml", cfg)
    for method in ("sers-anchor", "sers-sum"):
        assert ("train_stage", {"order": "order1", "method": method, "stage": "2", "task": "pe"}) in jobs
        assert ("task_similarity", {"order": "order1", "method": method, "stage": "2", "task": "pe"}) in jobs
    assert {w["kind"] for r, w in jobs if r == "synthesize"} == {"mask"}
    assert [w for r, w in jobs if r == "evolution_probe"] == [
        {"order": "order1", "method": "sers-anchor", "stage": "1", "task": "sa"}]


def test_sers_noreg_plans_sers_stages_without_a_penalty(workflow_dir):
    """The ablation the tiny run leaves out (config/tiny.yaml): sers' rehearsal chain, no similarity job."""
    cfg = workflow_dir.write_config("noreg.yaml", {"methods": ["sers", "sers-noreg"]})
    jobs = workflow_dir.planned_jobs("--configfile", "config/tiny.yaml", cfg)
    for rule in ("train_stage", "label_rehearsal", "task_similarity"):
        planned = {(w["method"], w["stage"]) for r, w in jobs if r == rule}
        if rule == "task_similarity":
            assert planned == {("sers", "2")}
        else:
            # stage 2 is the last: its task's pseudo rows would never be rehearsed, so they are not labelled
            stages = {"2"} if rule == "train_stage" else {"1"}
            assert planned == {(m, s) for m in ("sers", "sers-noreg") for s in stages}, rule


def test_a_config_file_plans_exactly_its_own_experiment(workflow_dir):
    """Snakemake merges a --configfile's mappings into config/config.yaml's; the experiment must not be."""
    cfg = workflow_dir.write_config("mine.yaml", {"tasks": ["sa", "pe"], "orders": {"o1": ["sa", "pe"]}})
    jobs = workflow_dir.planned_jobs("--configfile", cfg)
    assert {w["order"] for r, w in jobs if r in ("train_first_stage", "train_stage")} == {"o1"}
    # no `para` from the default, and no `pe`: last in every order, it is never rehearsed
    assert {w["task"] for r, w in jobs if r == "synthesize"} == {"sa"}
    assert {w["method"] for r, w in jobs if r == "train_stage"} == {"sers"}  # the schema's, not config.yaml's
    both = workflow_dir.write_config("both.yaml", {"tasks": ["sa", "pe"], "orders": {"o1": ["sa", "pe"], "o2": ["pe", "sa"]}})
    jobs = workflow_dir.planned_jobs("--configfile", both)  # each task is rehearsed in one of the orders
    assert {w["task"] for r, w in jobs if r == "synthesize"} == {"sa", "pe"}
    only_orders = workflow_dir.write_config("orders.yaml", {"orders": {"o2": ["pe", "sa"]}, "methods": ["replay"]})
    jobs = workflow_dir.planned_jobs("--configfile", only_orders)
    assert {w["order"] for r, w in jobs if r == "train_stage"} == {"o2"}
    assert {w["task"] for r, w in jobs if r == "real_rehearsal"} == {"pe"}


def test_a_preset_refuses_data_smaller_than_it_asks_for_but_still_plans(workflow_dir):
    cfg = workflow_dir.write_config("full.yaml", {"data": {"min_rows": {"train": 2000, "eval": 500}}})
    planned = workflow_dir.planned_jobs("--configfile", "config/tiny.yaml", cfg)
    assert any(r == "train_stage" for r, _ in planned)
    proc = workflow_dir.snakemake("--configfile", "config/tiny.yaml", cfg, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data/ni-c012-sample/sa.train.json has 100 rows, data.min_rows.train asks for 2000" in out
    assert "make data SUPERNI=" in out
    assert not (workflow_dir.root / "results").exists()  # refused before any job ran


def test_replicates_plan_one_pseudo_chain_and_a_stage_chain_each(workflow_dir):
    one = workflow_dir.planned_jobs("--configfile", "config/tiny.yaml")
    cfg = workflow_dir.write_config("reps.yaml", {"replicates": 3})
    three = workflow_dir.planned_jobs("--configfile", "config/tiny.yaml", cfg)
    count = lambda jobs, rule: sum(r == rule for r, _ in jobs)  # noqa: E731
    for rule in ("synthesize", "filter_pseudo", "embed_pseudo", "select_pseudo", "real_rehearsal"):
        assert count(three, rule) == count(one, rule), rule  # the pseudo chain runs once
    for rule in ("train_first_stage", "train_stage", "label_rehearsal", "task_similarity", "metrics"):
        assert count(three, rule) == 3 * count(one, rule), rule
    orders = {w["order"] for r, w in three if r == "train_stage"}
    assert orders == {"order1", "order1-rep2", "order1-rep3"}


def test_lint_is_clean_but_for_the_answered_environment_lint(workflow_dir):
    """README answers the one lint left on purpose: one environment for the whole workflow."""
    proc = workflow_dir.snakemake("--lint", check=False)
    titles = {line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip().startswith("* ")}
    assert titles == {"* Specify a conda environment or container for each rule.:"}, titles


def test_snakefmt_and_ruff_are_clean():
    """`make lint`'s other two checks: the workflow catalog's formatter and the Python linter."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO

    bin_dir = Path(sys.executable).parent
    for cmd in ([bin_dir / "snakefmt", "--check", "Snakefile", "rules"],
                [bin_dir / "ruff", "check", "src", "workflow", "tests", "benchmarks"]):
        proc = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
