"""The DAG itself: one real tiny run (every method but sers-noreg, see config/tiny.yaml) shared by the tests that read it and what a change reruns (resuming after SIGKILL: test_resume.py)."""
import json

import numpy as np
from safetensors.torch import load_file

from sers.io import read_jsonl
from sers.seeding import derive_seed
from sers.selection import select_by_kmeans

from conftest import BASELINE_METHODS, TINY_RUN_METHODS

TINY = ("--configfile", "config/tiny.yaml")

PSEUDO_RULES = ("synthesize", "filter_pseudo", "embed_pseudo", "select_pseudo")
PSEUDO_METHODS = ("ssr", "sers", "sers-nose", "sers-icl")
TINY_METHODS = TINY_RUN_METHODS + BASELINE_METHODS


def test_tiny_run_produces_selected_sets(tiny_run):
    # pe is last in the only order: never rehearsed, so it has no pseudo chain at all
    assert not (tiny_run.root / "results/tiny/pseudo/mask/pe").exists()
    for task in ("sa",):
        base = tiny_run.root / "results/tiny/pseudo/mask" / task
        raw = read_jsonl(base / "raw.jsonl")
        assert raw and all(r["provenance"]["seed_id"] for r in raw)
        summary = json.loads((base / "filter_summary.json").read_text())
        assert summary["raw"] == len(raw) == summary["kept"] + summary["dropped"]
        assert len(read_jsonl(base / "dropped.jsonl")) == summary["dropped"]
        selected = read_jsonl(base / "selected.jsonl")
        assert 0 < len(selected) <= 4
        kept_ids = {r["id"] for r in read_jsonl(base / "filtered.jsonl")}
        assert {r["id"] for r in selected} <= kept_ids


def test_second_run_does_nothing(tiny_run):
    out = tiny_run.snakemake("-n", "--configfile", "config/tiny.yaml")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_changing_one_task_threshold_reruns_exactly_what_it_invalidates(tiny_run):
    """filter[sa] → embed → select → labelled[sa] → every stage after sa's position; nothing else. A task's
    thresholds are SERS's filter of masked inputs; SSR's ICL pairs have a filter of their own (filter.icl)."""
    mask_methods = sorted(m for m in PSEUDO_METHODS if m not in ("ssr", "sers-icl"))
    tiny_run.write_config("sa-threshold.yaml", {"filter": {"tasks": {"sa": {"max_tokens": 399}}}})
    jobs = tiny_run.planned_jobs("--configfile", "config/tiny.yaml", "sa-threshold.yaml")
    pseudo = sorted((r, w["kind"], w["task"]) for r, w in jobs if r in PSEUDO_RULES)
    assert pseudo == sorted((r, "mask", "sa") for r in ("filter_pseudo", "embed_pseudo", "select_pseudo"))
    # sa is stage 1: its rehearsal set is relabelled, stage 1 is not retrained, stage 2 is (pe, the last
    # task, has no rehearsal set to relabel)
    labelled = sorted((w["method"], w["stage"]) for r, w in jobs if r == "label_rehearsal")
    assert labelled == [(m, "1") for m in mask_methods]
    trained = sorted((w["method"], w["stage"]) for r, w in jobs if r == "train_stage")
    assert trained == sorted((m, "2") for m in mask_methods)
    assert "train_first_stage" not in [r for r, _ in jobs]
    assert not any(r in ("train_mtl", "real_rehearsal", "synthesize", "build_tiny_model") for r, _ in jobs)
    evaluated = {w["modeldir"] for r, w in jobs if r == "evaluate"}
    assert evaluated == {f"order1/{m}/stage2-pe" for m in mask_methods}
    # SSR's filter: every task's ICL chain and the ICL methods' later stages; and, in the same dry-run, a
    # training override retrains the stages it names only (which rule reaches which job: test_config.py)
    tiny_run.write_config("icl-and-schedule.yaml", {
        "filter": {"icl": {"max_output_tokens": 100}},
        "training": {"overrides": [{"methods": ["sers"], "set": {"epochs": 2}}]}})
    jobs = tiny_run.planned_jobs("--configfile", "config/tiny.yaml", "icl-and-schedule.yaml")
    assert {(w["kind"], r) for r, w in jobs if r in PSEUDO_RULES} == {
        ("icl", r) for r in ("filter_pseudo", "embed_pseudo", "select_pseudo")}
    assert sorted((r, w.get("method")) for r, w in jobs if r.startswith("train")) == [
        ("train_stage", "sers"), ("train_stage", "sers-icl"), ("train_stage", "ssr")]


def _planned_with_eval_file(tiny_run, task, edit):
    """The plan after `edit` changed rows of `task`'s eval file (in a private copy of the data folder)."""
    import shutil

    link = tiny_run.root / "data"
    target = link.resolve()
    link.unlink()
    try:
        shutil.copytree(target, link, copy_function=shutil.copy2)  # same mtimes: nothing else is newer
        path = link / "ni-c012-sample" / f"{task}.eval.json"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        path.write_text("".join(json.dumps(edit(r)) + "\n" for r in rows))
        return tiny_run.planned_jobs("--configfile", "config/tiny.yaml")
    finally:
        shutil.rmtree(link)
        link.symlink_to(target)


def test_one_evaluation_job_per_model_and_a_changed_reference_rescores_only(tiny_run):
    """References changed: every model scoring `pe` rescores (one job per model, all its tasks), nothing
    regenerates. Prompts changed: the models that answer `pe` regenerate (their prompt digest changed),
    then rescore."""
    references = _planned_with_eval_file(tiny_run, "pe", lambda r: {**r, "output": r["output"] + " ."})
    assert {r for r, _ in references} <= {"score_eval", "metrics", "summarize_methods", "plots", "resource_usage",
                                          "all"}
    rescored = [w["modeldir"] for r, w in references if r == "score_eval"]
    # every model is scored on pe (eval.all_tasks): θ0, mtl, the shared stage 1 and every stage-2 model
    on_pe = {"base", "mtl/stage1-all", "order1/stage1-sa"} | {f"order1/{m}/stage2-pe" for m in TINY_METHODS
                                                               if m != "mtl"}
    assert len(rescored) == len(set(rescored)) and set(rescored) == on_pe
    prompts = _planned_with_eval_file(tiny_run, "pe", lambda r: {**r, "full_prompt": r["full_prompt"] + " ?"})
    regenerated = [w["modeldir"] for r, w in prompts if r == "evaluate"]
    assert len(regenerated) == len(set(regenerated)) and set(regenerated) == set(rescored)  # one job per model
    assert sorted(w["modeldir"] for r, w in prompts if r == "score_eval") == sorted(rescored)
    # a scorer change rescores every model and regenerates none
    tiny_run.write_config("rouge.yaml", {"eval": {"rouge": "reference"}})
    scorer = tiny_run.planned_jobs("--configfile", "config/tiny.yaml", "rouge.yaml")
    assert {r for r, _ in scorer} <= {"score_eval", "metrics", "summarize_methods", "plots", "resource_usage", "all"}
    assert sorted(w["modeldir"] for r, w in scorer if r == "score_eval") == sorted(on_pe)


def _planned_after_removing(tiny_run, relative):
    adapter = tiny_run.root / relative
    moved = adapter.with_name("moved-away")
    adapter.rename(moved)
    try:
        return tiny_run.planned_jobs("--configfile", "config/tiny.yaml")
    finally:
        moved.rename(adapter)


def test_deleting_a_stage_adapter_reruns_that_stage_and_what_follows_only(tiny_run):
    jobs = _planned_after_removing(tiny_run, "results/tiny/order1/sers/stage2-pe/adapter")
    trained = [(w["method"], w["stage"]) for r, w in jobs if r == "train_stage"]
    assert trained == [("sers", "2")]  # nothing before it, no other method
    assert {w["modeldir"] for r, w in jobs if r == "evaluate"} == {"order1/sers/stage2-pe"}
    # stage 1 (task 1 alone, no penalty) is shared by every method: removing it retrains it once and
    # then every method's later stages
    jobs = _planned_after_removing(tiny_run, "results/tiny/order1/stage1-sa/adapter")
    assert [r for r, _ in jobs].count("train_first_stage") == 1
    trained = sorted(w["method"] for r, w in jobs if r == "train_stage")
    assert trained == sorted(m for m in TINY_METHODS if m != "mtl")
    assert not any(r in PSEUDO_RULES or r == "train_mtl" for r, _ in jobs)


def test_every_method_produced_its_artifacts(tiny_run):
    run = tiny_run.root / "results/tiny"
    for method in TINY_RUN_METHODS:
        # one layout for every method's matrix, the multi-task model's one row included
        assert (run / f"order1/{method}/matrix.csv").read_text().startswith("stage,sa,pe\n")
        if method == "mtl":
            assert (run / "mtl/stage1-all/adapter/adapter_model.safetensors").is_file()
            continue
        for stage, task in ((1, "sa"), (2, "pe")):
            d = run / f"order1/{method}/stage{stage}-{task}"
            model = run / "order1/stage1-sa" if stage == 1 else d  # the shared first stage
            assert (model / "adapter/adapter_model.safetensors").is_file() and (model / "adapter/loss.jsonl").is_file()
            for t in ("sa", "pe"):
                assert (model / f"eval/{t}.jsonl").is_file()
            if method in PSEUDO_METHODS and stage == 2:  # the last stage: nothing later rehearses its task
                assert not (d / "rehearsal.jsonl").exists()
            elif method in PSEUDO_METHODS:
                rows = read_jsonl(d / "rehearsal.jsonl")
                assert all({"output", "evolved", "label_source"} <= set(r) for r in rows)
        if method in ("sers", "sers-nose", "sers-icl"):
            sim = json.loads((run / f"order1/{method}/stage2-pe/similarity.json").read_text())
            assert sim["lambda_min"] <= sim["lambda"] <= sim["lambda_max"]
        metrics = json.loads((run / f"order1/{method}/metrics.json").read_text())
        assert metrics["method"] == method and "ar" in metrics
    # replay rehearses real rows; seq none
    replay = json.loads((run / "order1/replay/stage2-pe/adapter/train_config.json").read_text())
    assert replay["n_replay_rows"] == 4
    assert json.loads((run / "order1/seq/stage2-pe/adapter/train_config.json").read_text())["n_replay_rows"] == 0
    # self-evolution re-decoded round(se_ratio·N) rows for sers, none for sers-nose
    sers = read_jsonl(run / "order1/sers/stage1-sa/rehearsal.jsonl")
    assert sum(r["evolved"] for r in sers) == round(0.2 * len(sers))
    assert not any(r["evolved"] for r in read_jsonl(run / "order1/sers-nose/stage1-sa/rehearsal.jsonl"))
    summary = json.loads((run / "order1/sers/stage1-sa/rehearsal_summary.json").read_text())
    assert summary["n_rows"] == len(sers) and summary["n_empty_label"] == sum(not r["output"].strip() for r in sers)


def test_methods_table_has_paired_differences_from_the_baseline(tiny_run):
    run = tiny_run.root / "results/tiny/summary"
    table = (run / "methods.md").read_text()
    assert "ΔAR vs seq [95% CI], p" in table and "ΔBWT vs seq [95% CI], p" in table
    comparisons = json.loads((run / "comparisons.json").read_text())
    assert {c["method"] for c in comparisons} == set(TINY_METHODS) - {"seq"}
    assert all(c["baseline"] == "seq" and c["ar"]["ci"][0] <= c["ar"]["diff"] <= c["ar"]["ci"][1]
               for c in comparisons)
    assert all(c["bwt"] is None for c in comparisons if c["method"] == "mtl")


def test_report_builds_and_contains_every_plot(tiny_run):
    tiny_run.snakemake("--configfile", "config/tiny.yaml", "--report", "report.html")
    html = (tiny_run.root / "report.html").read_text(errors="replace")
    plots = tiny_run.root / "results/tiny/summary/plots"
    names = [p.name for p in plots.rglob("*.png")]
    assert {"funnel.png", "similarity.png", "differences.png", "order1.png", "order1-sers.png", "sa.png"} <= set(names)
    for name in names:
        assert name in html, name
    for category in ("Score matrices", "Forgetting curves", "Task similarity", "Pseudo samples", "Metrics"):
        assert category in html, category


def test_llamafactory_export_names_files_that_exist(tiny_run):
    info_path = tiny_run.root / "results/tiny/export/dataset_info.json"
    info = json.loads(info_path.read_text())
    assert "order1.sers.stage1-sa" in info
    for name, entry in info.items():
        data = json.loads((info_path.parent / entry["file_name"]).read_text())
        assert isinstance(data, list) and all({"instruction", "input", "output"} <= set(r) for r in data)
        assert entry["formatting"] == "alpaca"


# ---- the regularisation and architecture baselines (ewc, l2, lwf, olora, replay-kmeans) ----
def test_every_baseline_trains_evaluates_and_is_tabled(tiny_run):
    run = tiny_run.root / "results/tiny"
    table = (run / "summary/methods.md").read_text()
    for method in BASELINE_METHODS:
        d = run / f"order1/{method}/stage2-pe"
        assert (d / "adapter/adapter_model.safetensors").is_file(), method
        for t in ("sa", "pe"):
            assert (d / f"eval/{t}.jsonl").is_file(), (method, t)
        metrics = json.loads((run / f"order1/{method}/metrics.json").read_text())
        assert metrics["method"] == method and "ar" in metrics
        assert f"| {method} | order1 |" in table, method
    config = {m: json.loads((run / f"order1/{m}/stage2-pe/adapter/train_config.json").read_text()) for m in BASELINE_METHODS}
    for m in ("ewc", "l2", "lwf", "olora"):  # a term of their own, no rehearsal
        assert config[m]["baseline"]["kind"] == m and config[m]["n_replay_rows"] == 0
        log = read_jsonl(run / f"order1/{m}/stage2-pe/adapter/loss.jsonl")
        assert log[-1]["baseline_term"] > 0, m
    assert config["ewc"]["baseline"]["fisher"].endswith("order1/ewc/stage1-sa/fisher.safetensors")
    fisher = json.loads((run / "order1/ewc/stage1-sa/fisher.json").read_text())
    assert fisher["n_rows"] == 12 and fisher["adapter"].endswith("order1/stage1-sa/adapter")  # 12 training rows
    adapter = load_file(str(run / "order1/stage1-sa/adapter/adapter_model.safetensors"))
    fisher_keys = set(load_file(str(run / "order1/ewc/stage1-sa/fisher.safetensors")))
    assert fisher_keys == {k.replace(".weight", ".default.weight") for k in adapter}  # one F per LoRA matrix
    # olora: the stack of two rank-8 blocks, evaluated like any adapter
    blocks = json.loads((run / "order1/olora/stage2-pe/adapter/olora_blocks.json").read_text())
    assert blocks["blocks"] == [[0, 8], [8, 16]]
    assert json.loads((run / "order1/olora/stage2-pe/adapter/adapter_config.json").read_text())["r"] == 16
    # replay-kmeans rehearses max_replay_rows real rows chosen by k-means over the real training rows
    assert config["replay-kmeans"]["n_replay_rows"] == 4 and config["replay-kmeans"]["baseline"] is None
    selected = read_jsonl(run / "real-kmeans/sa/selected.jsonl")
    pool = {r["id"] for r in read_jsonl(run / "real-kmeans/sa/pool.jsonl")}
    assert len(selected) == 4 and {r["id"] for r in selected} <= pool and len(pool) == 12
    assert all(r["label_source"] == "real" and r["output"] for r in selected)
    summary = json.loads((run / "real-kmeans/sa/selection.json").read_text())
    assert summary["n_clusters"] == 2 and sum(summary["quotas"]) == 4
    # exactly the pseudo rows' selection, run on the real pool's embeddings with the rule's seed
    emb = np.load(run / "real-kmeans/sa/embeddings.npy")
    assert emb.shape[0] == 12 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    chosen, _ = select_by_kmeans(emb, 2, 4, derive_seed(1234, "select", "real", "sa"))
    pool_rows = read_jsonl(run / "real-kmeans/sa/pool.jsonl")
    assert [pool_rows[i]["id"] for i in chosen] == [r["id"] for r in selected]


def test_a_changed_baseline_key_reruns_that_method_only(tiny_run):
    def planned(change):
        tiny_run.write_config("change.yaml", {"baselines": change})
        jobs = tiny_run.planned_jobs("--configfile", "config/tiny.yaml", "change.yaml")
        return sorted((r, w.get("method", w.get("modeldir", ""))) for r, w in jobs if r in ("train_stage", "fisher", "evaluate"))

    assert planned({"l2": {"lambda": 0.5}}) == [("evaluate", "order1/l2/stage2-pe")] + [("train_stage", "l2")]
    assert planned({"olora": {"orthogonal_matrix": "lora_B"}}) == ([("evaluate", "order1/olora/stage2-pe")]
                                                                  + [("train_stage", "olora")])
    # the Fisher's rows rerun the Fisher and EWC's stage; EWC's λ its stage only
    assert planned({"ewc": {"fisher_rows": 5}}) == ([("evaluate", "order1/ewc/stage2-pe")]
                                                    + [("fisher", "ewc"), ("train_stage", "ewc")])
    assert planned({"ewc": {"lambda": 1.0}}) == [("evaluate", "order1/ewc/stage2-pe")] + [("train_stage", "ewc")]


def test_every_job_left_a_resource_record_and_the_report_tables_them(tiny_run):
    """Each job's benchmark TSV (wall time, peak RSS, CPU time) under results/tiny/benchmarks/<rule>/<job>.tsv,
    grouped jobs included, and the per-rule and per-method tables built from them."""
    import csv

    from sers.usage import collect_records

    run = tiny_run.root / "results/tiny"
    records = collect_records(run / "benchmarks")
    rules = {r["rule"] for r in records}
    assert {"synthesize", "filter_pseudo", "embed_pseudo", "select_pseudo", "train_first_stage", "train_stage",
            "task_similarity", "label_rehearsal", "fisher", "evaluate", "score_eval", "metrics", "real_rehearsal",
            "real_pool", "embed_real", "select_real", "train_mtl", "summarize_methods", "plots",
            "export_llamafactory", "build_tiny_model"} <= rules
    assert all(r["s"] > 0 for r in records)
    # one record per evaluated model of each evaluation group's two jobs
    evaluated = {r["job"] for r in records if r["rule"] == "evaluate"}
    assert evaluated == {r["job"] for r in records if r["rule"] == "score_eval"}
    assert {"base", "mtl/stage1-all", "order1/stage1-sa", "order1/sers/stage2-pe"} <= evaluated
    with open(run / "summary/resources_by_rule.csv", newline="") as f:
        by_rule = {row["rule"]: row for row in csv.DictReader(f)}
    assert set(by_rule) == rules
    assert by_rule["train_stage"]["gpu"] == "True" and by_rule["score_eval"]["gpu"] == "False"
    assert int(by_rule["evaluate"]["jobs"]) == len(evaluated)
    with open(run / "summary/resources_by_method.csv", newline="") as f:
        by_method = {row["method"]: row for row in csv.DictReader(f)}
    assert set(by_method) == set(TINY_METHODS) | {"shared"}
    assert int(by_method["replay"]["jobs"]) >= 3  # its real rehearsal rows, stage 2, evaluation, metrics
    assert sum(int(row["jobs"]) for row in by_method.values()) == len(records)
    table = (run / "summary/resources.md").read_text()
    assert "| train_stage | yes |" in table and "| shared |" in table
