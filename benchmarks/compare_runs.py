"""Two runs of one config on two devices, side by side (issue "The GPU path", item 4).

    .venv/bin/python benchmarks/compare_runs.py results/tiny-cpu gpu/tiny/results/tiny-cuda [--json out.json]

Each argument is a run folder (`results/<run>`, or the copy `gpu_session.sh` step 3 brings back). For
every artifact both runs hold it compares:
  loss.jsonl            each training stage's per-step loss: the largest relative difference at any step
                        (bf16 on a GPU vs fp32 on a CPU drifts; a wrong device path shows at step 1);
  eval_generations.jsonl  the share of evaluation rows whose prediction is the same text;
  rehearsal.jsonl       the number of rehearsal rows (synthesis, filter and selection upstream);
  matrix.csv            each method's stage × task ROUGE-L matrix: the largest absolute difference.
A random-initialised tiny model scores ROUGE-L 0 everywhere on either device, so its matrices agree
without saying much: the losses are the informative comparison there.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from sers.io import read_jsonl


def _pairs(a: Path, b: Path, name: str) -> list[tuple[str, Path, Path]]:
    """(relative folder, a's file, b's file) for every `name` under `a` that `b` holds too."""
    out = []
    for fa in sorted(a.rglob(name)):
        fb = b / fa.relative_to(a)
        if fb.exists():
            out.append((str(fa.parent.relative_to(a)), fa, fb))
    return out


def compare_runs(a: Path, b: Path) -> dict:
    """What differs between run folders `a` and `b` (see the module docstring); each list is one entry
    per artifact both hold, and `missing` counts those only `a` holds."""
    result: dict = {"a": str(a), "b": str(b), "losses": [], "predictions": [], "rehearsal": [], "matrices": []}
    for where, fa, fb in _pairs(a, b, "loss.jsonl"):
        la, lb = [r["loss"] for r in read_jsonl(fa)], [r["loss"] for r in read_jsonl(fb)]
        steps = min(len(la), len(lb))
        rel = [abs(x - y) / max(abs(x), 1e-8) for x, y in zip(la, lb)]
        result["losses"].append({"stage": where, "steps": steps, "steps_differ": len(la) != len(lb),
                                 "first_loss": (la[0], lb[0]) if steps else None,
                                 "max_relative_difference": max(rel) if rel else None})
    for where, fa, fb in _pairs(a, b, "eval_generations.jsonl"):
        pa = {(r["task"], r["id"]): r["prediction"] for r in read_jsonl(fa)}
        pb = {(r["task"], r["id"]): r["prediction"] for r in read_jsonl(fb)}
        both = pa.keys() & pb.keys()
        result["predictions"].append({"model": where, "rows": len(both),
                                      "identical": sum(pa[k] == pb[k] for k in both)})
    for where, fa, fb in _pairs(a, b, "rehearsal.jsonl"):
        result["rehearsal"].append({"stage": where, "rows": (len(read_jsonl(fa)), len(read_jsonl(fb)))})
    for where, fa, fb in _pairs(a, b, "matrix.csv"):
        ma, mb = pd.read_csv(fa, index_col=0), pd.read_csv(fb, index_col=0)
        result["matrices"].append({"method": where, "max_abs_difference": float((ma - mb).abs().max().max())})
    result["missing"] = {name: sum(not (b / f.relative_to(a)).exists() for f in a.rglob(name))
                         for name in ("loss.jsonl", "eval_generations.jsonl", "rehearsal.jsonl", "matrix.csv")}
    return result


def markdown(c: dict) -> str:
    def worst(items: list[dict], key: str) -> float | None:
        values = [i[key] for i in items if i[key] is not None]
        return max(values) if values else None

    lines = [f"`{c['a']}` vs `{c['b']}`:", ""]
    loss = worst(c["losses"], "max_relative_difference")
    lines.append(f"- training losses: {len(c['losses'])} stages compared"
                 + (f", largest relative difference at any step {loss:.2%}" if loss is not None else "")
                 + (f"; step counts differ in {sum(i['steps_differ'] for i in c['losses'])}"
                    if any(i["steps_differ"] for i in c["losses"]) else ""))
    rows, same = sum(p["rows"] for p in c["predictions"]), sum(p["identical"] for p in c["predictions"])
    lines.append(f"- evaluation predictions: {same} of {rows} rows identical over {len(c['predictions'])} models")
    differ = [r for r in c["rehearsal"] if r["rows"][0] != r["rows"][1]]
    lines.append(f"- rehearsal sets: {len(c['rehearsal'])} compared, {len(differ)} with another row count")
    matrix = worst(c["matrices"], "max_abs_difference")
    lines.append(f"- stage × task matrices: {len(c['matrices'])} compared"
                 + (f", largest |difference| {matrix:.2f} ROUGE-L points" if matrix is not None else ""))
    missing = {k: v for k, v in c["missing"].items() if v}
    if missing:
        lines.append(f"- only in `{c['a']}`: " + ", ".join(f"{v} × {k}" for k, v in missing.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--json", type=Path, help="also write the comparison as JSON")
    args = ap.parse_args()
    for run in (args.a, args.b):
        if not run.is_dir():
            raise SystemExit(f"{run}: not a run folder")
    c = compare_runs(args.a, args.b)
    if args.json:
        args.json.write_text(json.dumps(c, indent=2) + "\n", encoding="utf-8")
    print(markdown(c), end="")


if __name__ == "__main__":
    main()
