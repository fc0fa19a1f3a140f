"""The Markdown of a device session (benchmarks/gpu_session.sh), for benchmarks/README.md.

    tar xzf gpu-session.tar.gz && .venv/bin/python benchmarks/gpu_report.py gpu > gpu-report.md

Reads what the session left in its work folder: the machine and package versions (step1.log), the
generation benchmark's JSON (steps 2 and 5), the paper-cost table (step 4), the tiny experiment's CUDA
run (step 3) against a CPU run made here (`--cpu-run`, via compare_runs.py) and each step's exit status
(summary.txt). Each measurement is set against
the target of the issue "The GPU path"; a missing step is said to be missing, not left out.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("compare_runs", Path(__file__).with_name("compare_runs.py"))
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)

# (bench, key) -> (target, what): the targets, and those benchmarks/README.md already used (all "at least")
TARGETS = {
    ("synthesis", "speedup"): (4.0, "batched vs batch-1 synthesis"),
    ("blend", "speedup_vs_reference"): (30.0, "blend decoding vs the reference loop"),
    ("blend", "blend_vs_plain_greedy"): (0.8, "blend decoding (LoraRowGate) vs plain greedy"),
    ("blend", "peft_mixed_batch_vs_plain_greedy"): (0.8, "blend decoding (peft mixed batches) vs plain greedy"),
}
LONG, SHORT = "pos", "sa"  # the long-instruction task and the one with the shortest prompts


def _fmt(x: float) -> str:
    return f"{x:.2f}×"


def _verdict(value: float, target: float, at_least: bool = True) -> str:
    ok = value >= target if at_least else value <= target
    return "met" if ok else "**missed**"


def generation_rows(results: list[dict]) -> list[str]:
    rows = ["| measurement | result | target | |", "|---|---|---|---|"]
    by_bench = {}
    for r in results:
        by_bench.setdefault(r["bench"], []).append(r)
    for (bench, key), (target, label) in TARGETS.items():
        for r in by_bench.get(bench, []):
            if key in r:
                detail = ""
                if key == "speedup":
                    detail = f" ({r['batch1_rows_per_s']:.2f} → {r['batched_rows_per_s']:.2f} rows/s)"
                elif key == "speedup_vs_reference":
                    detail = (f" ({r['reference_tokens_per_s']:.1f} → {r['ours_tokens_per_s']:.1f} tok/s; "
                              f"{r['identical_rows']} of {r['reference_rows']} rows identical)")
                elif key == "blend_vs_plain_greedy":
                    detail = f" ({r['ours_tokens_per_s']:.1f} vs {r['plain_greedy_tokens_per_s']:.1f} tok/s)"
                elif key == "peft_mixed_batch_vs_plain_greedy":
                    detail = (f" ({r['peft_mixed_batch_tokens_per_s']:.1f} tok/s; "
                              f"{r['peft_mixed_batch_identical_rows']} of {r['rows']} rows as the gate's)")
                rows.append(f"| {label} | **{_fmt(r[key])}**{detail} | ≥ {target:g}× | {_verdict(r[key], target)} |")
    for r in by_bench.get("blend", []):
        for route, per_step in (r.get("host_syncs_per_step") or {}).items():
            if per_step is not None:
                rows.append(f"| host syncs per decoding step, {route.replace('_', ' ')} | {per_step:g} | "
                            f"{'≤ 1' if route != 'blend_peft_mixed_batch' else '–'} | "
                            f"{_verdict(per_step, 1.0, at_least=False) if route != 'blend_peft_mixed_batch' else ''} |")
    for r in by_bench.get("blend_ends", []):
        for key, label in (("alpha1_identical_to_base_rows", "blend at α = 1 vs plain greedy θ0"),
                           ("alpha0_identical_to_tuned_rows", "blend at α = 0 vs plain greedy θt")):
            rows.append(f"| {label}, identical rows | **{r[key]} of {r['rows']}** | all | "
                        f"{_verdict(r[key], r['rows'])} |")
    for r in by_bench.get("prefix", []):
        long_task = r["task"] == LONG
        target = 2.0 if long_task else 1.0
        what = "long instruction" if long_task else "short prompts" if r["task"] == SHORT else "prompts"
        shape = (f"`{r['task']}`, {r['prompt_tokens_mean']:.0f}-token prompts, "
                 f"{r.get('shared_prefix_tokens_mean', float('nan')):.0f} shared")
        rows.append(f"| training tokens/s, shared prefix vs not ({shape}) | **{_fmt(r['train_speedup'])}** "
                    f"({r['train_tokens_per_s_plain']:.0f} → {r['train_tokens_per_s_shared']:.0f} tok/s) | "
                    f"≥ {target:g}× ({what}) | {_verdict(r['train_speedup'], target)} |")
        by_layout = r.get("train_tokens_per_s_by_layout") or {}
        for layout in ("two_pass", "packed"):  # the two shared-prefix layouts the chosen one picks between
            if layout in by_layout:
                speedup = by_layout[layout] / r["train_tokens_per_s_plain"]
                rows.append(f"| training tokens/s, {layout.replace('_', '-')} layout vs plain (`{r['task']}`) | "
                            f"{_fmt(speedup)} ({by_layout[layout]:.0f} tok/s) | | |")
        if r.get("train_layouts_chosen"):
            chosen = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in r["train_layouts_chosen"].items())
            rows.append(f"| layout chosen per batch (`{r['task']}`) | {chosen} | | |")
        rows.append(f"| greedy evaluation rows/s, shared prefix vs not (`{r['task']}`) | **{_fmt(r['eval_speedup'])}** "
                    f"({r['eval_identical_rows']} of {r['rows']} rows identical) | ≥ {target:g}× ({what}) | "
                    f"{_verdict(r['eval_speedup'], target)} |")
        for layout, prof in (r.get("profiles") or {}).items():
            rows.append(f"| attention operators, {layout} layout (`{r['task']}` training batch) | "
                        f"{', '.join(prof['attention_ops']) or '–'} | | |")
    for r in by_bench.get("layout_shapes", []):
        faster = "packed" if r["measured_packed_vs_two_pass"] <= 1 else "two-pass"
        rows.append(f"| packed / two-pass step time, {r['shape']} ({r['rows']} rows, {r['shared_prefix_tokens']} "
                    f"shared) | {r['measured_packed_vs_two_pass']:.2f} (counted {r['counted_packed_vs_two_pass']:.2f}) | "
                    f"the faster one chosen | {'met' if faster == r['chosen'].replace('_', '-') else '**missed**'} "
                    f"({r['chosen'].replace('_', '-')} chosen) |")
    for r in by_bench.get("memory", []):
        rows.append(f"| peak memory, blend vs plain greedy | **{_fmt(r['ratio'])}** ({r['blend_peak_mib']:.0f} vs "
                    f"{r['plain_greedy_peak_mib']:.0f} MiB) | ≤ 1.15× | {_verdict(r['ratio'], 1.15, at_least=False)} |")
    return rows


def report(work: Path, cpu_run: Path | None = None) -> str:
    out = ["## GPU session (`benchmarks/gpu_session.sh`)", ""]
    machine = work / "step1.log"
    out += ["Machine and packages (step 1):", "", "```",
            machine.read_text().strip() if machine.exists() else "step 1 did not run", "```", ""]
    status = work / "summary.txt"
    out += ["Steps:", "", "```", status.read_text().strip() if status.exists() else "no summary.txt", "```", ""]

    generation = sorted(work.glob("generation-*.json"))
    out += ["### Generation and training speed (steps 2, 5 and 6)", ""]
    if generation:
        for path in generation:
            data = json.loads(path.read_text())
            out += [f"{data['date']}, {data.get('gpu') or data['machine']}, {data['model']}, {data['dtype']} "
                    f"(`{path.name}`):", ""]
            out += generation_rows(data["results"]) + [""]
    else:
        out += ["Steps 2, 5 and 6 left no results.", ""]

    out += ["### The paper preset's cost (step 4)", ""]
    cost = sorted(work.glob("paper_cost-*.md"))
    if cost:
        out += [cost[0].read_text().strip(), ""]
    elif (work / "step4.log").exists():
        out += ["Step 4 was cut off before its table: `benchmarks/paper_cost.py --from-log "
                f"{work / 'step4.log'}` builds it from the lines it printed.", ""]
    else:
        out += ["Step 4 did not run.", ""]

    out += ["### The tiny experiment on CUDA vs CPU (step 3)", ""]
    cuda_run = next(iter(sorted((work / "tiny" / "results").glob("tiny-cuda"))), None)
    if cuda_run is None:
        out += ["Step 3 brought back no CUDA run.", ""]
    elif cpu_run is None or not cpu_run.is_dir():
        out += [f"The CUDA run is in `{cuda_run}`. Make the CPU run of the same config here (step 3's command "
                "with `device=cpu run=tiny-cpu`) and give it as `--cpu-run results/tiny-cpu`.", ""]
    else:
        out += [compare_runs.markdown(compare_runs.compare_runs(cpu_run, cuda_run))]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="the session's work folder (gpu/ in gpu-session.tar.gz)")
    ap.add_argument("--cpu-run", type=Path, help="a CPU run of step 3's config made here (results/tiny-cpu)")
    args = ap.parse_args()
    print(report(args.work, args.cpu_run))


if __name__ == "__main__":
    main()
