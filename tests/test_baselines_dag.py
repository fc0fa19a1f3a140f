"""The baselines in the DAG: a second small tiny run with just ewc, l2, lwf, olora and replay-kmeans
(one order of two tasks), and what a changed baseline key reruns."""
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from sers.io import read_jsonl
from sers.seeding import derive_seed
from sers.selection import select_by_kmeans

from conftest import Workflow

BASELINES = ("ewc", "l2", "lwf", "olora", "replay-kmeans")
CONFIG = {"methods": list(BASELINES), "eval": {"base": False}}
TARGET = "results/tiny/summary/methods.md"  # every method's metrics and the table


@pytest.fixture(scope="module")
def baselines_run(tmp_path_factory) -> Workflow:
    wf = Workflow(tmp_path_factory.mktemp("baselines-run"))
    wf.write_config("baselines.yaml", CONFIG)
    wf.snakemake(TARGET, "--configfile", "config/tiny.yaml", "baselines.yaml")
    return wf


@pytest.mark.slow
def test_every_baseline_trains_evaluates_and_is_tabled(baselines_run):
    run = baselines_run.root / "results/tiny"
    table = (run / "summary/methods.md").read_text()
    for method in BASELINES:
        d = run / f"order1/{method}/stage2-pe"
        assert (d / "adapter/adapter_model.safetensors").is_file(), method
        for t in ("sa", "pe"):
            assert (d / f"eval/{t}.jsonl").is_file(), (method, t)
        metrics = json.loads((run / f"order1/{method}/metrics.json").read_text())
        assert metrics["method"] == method and "ar" in metrics
        assert f"| {method} | order1 |" in table, method
    config = {m: json.loads((run / f"order1/{m}/stage2-pe/adapter/train_config.json").read_text()) for m in BASELINES}
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


@pytest.mark.slow
def test_a_changed_baseline_key_reruns_that_method_only(baselines_run):
    def planned(change):
        baselines_run.write_config("change.yaml", {"baselines": change})
        jobs = baselines_run.planned_jobs(TARGET, "--configfile", "config/tiny.yaml", "baselines.yaml", "change.yaml")
        return sorted((r, w.get("method", w.get("modeldir", ""))) for r, w in jobs if r in ("train_stage", "fisher", "evaluate"))

    assert planned({"l2": {"lambda": 0.5}}) == [("evaluate", "order1/l2/stage2-pe")] * 2 + [("train_stage", "l2")]
    assert planned({"olora": {"orthogonal_matrix": "lora_B"}}) == ([("evaluate", "order1/olora/stage2-pe")] * 2
                                                                  + [("train_stage", "olora")])
    # the Fisher's rows rerun the Fisher and EWC's stage; EWC's λ its stage only
    assert planned({"ewc": {"fisher_rows": 5}}) == ([("evaluate", "order1/ewc/stage2-pe")] * 2
                                                    + [("fisher", "ewc"), ("train_stage", "ewc")])
    assert planned({"ewc": {"lambda": 1.0}}) == [("evaluate", "order1/ewc/stage2-pe")] * 2 + [("train_stage", "ewc")]
