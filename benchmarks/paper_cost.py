"""What the paper preset costs on one GPU (issue "The GPU path", item 5): not a test, numbers for the README.

    .venv/bin/python benchmarks/paper_cost.py --shape tiny                      # CPU, the preset's lengths: ~20 s
    .venv/bin/python benchmarks/paper_cost.py --shape tiny --prompt-tokens 64 --target-tokens 16 --new-tokens 8 \
        --simulate-oom 1                        # a CPU check of every path, the out-of-memory fallback included
    python benchmarks/paper_cost.py --shape llama2-7b --device cuda --dtype bfloat16 --memory-limit-gib 79

A random-initialised LLaMA of the chosen shape (no weights, no tokenizer: random token ids) is built on
the device, with the LoRA adapter of config/experiments/paper-llama2-7b.yaml (layered over
config/config.yaml as Snakemake layers it), and measured with the project's own code paths:
  training    one optimiser step on the preset's batch at its full prompt + target length
              (`sers.training.target_cross_entropy`, the L2 penalty, AdamW, bf16 autocast on CUDA),
              warm (the second step is timed) with its peak GPU memory. A batch that runs out of
              memory is retried with training.gradient_checkpointing, then in smaller micro-batches
              (the same effective batch); every attempt is reported, the fastest that fits is used;
  forward     `sers.similarity.pooled_hidden_states` at the full length (the task_similarity rule);
  fisher      one row's forward + backward at batch 1, dropout off (the fisher rule, EWC);
  generation  `sers.generation.generate` at the preset's eval, synthesis (sampled) and label
              (self-evolution) batch sizes and max_new_tokens, every row at max_prompt_tokens and
              EOS ignored (each row generates max_new_tokens).
It writes benchmarks/out/paper_cost-<shape>-<device>.json (and a .md beside it) and prints both: the
measurements, then the preset's GPU-hours per rule (`estimate_gpu_hours`, the job counts follow from the
config and match `snakemake -n`'s Job stats for the preset) with the assumptions under the table.

    .venv/bin/python benchmarks/paper_cost.py --from-run results/paper-llama2-7b

measures nothing and estimates nothing: the GPU-hours a run (whole or in part) took, from the resource
record every job of the workflow writes (results/<run>/benchmarks/<rule>/<job>.tsv, `sers.usage`): each
GPU rule's jobs and summed wall time, one GPU per job, model loading and all.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("SERS_NO_PROGRESS", "1")  # one JSON line per measurement, no progress bars

import torch  # noqa: E402
import yaml  # noqa: E402

from sers.config import training_settings  # noqa: E402
from sers.methods import (  # noqa: E402
    ICL_METHODS,
    MASK_METHODS,
    NO_EVOLUTION_METHODS,
    PENALTY_METHODS,
    PSEUDO_METHODS,
    REAL_REPLAY_METHODS,
)

REPO = Path(__file__).resolve().parents[1]
# the rules that ask for a GPU (gpu_resources in rules/*.smk): their jobs' wall time is GPU time
GPU_RULES = frozenset({"synthesize", "train_first_stage", "train_stage", "train_mtl", "task_similarity", "fisher",
                       "label_rehearsal", "evolution_probe", "evaluate"})
PRESET = REPO / "config/experiments/paper-llama2-7b.yaml"
GIB = 1024 ** 3

# LlamaConfig fields of each shape. llama2-7b is Llama-2-7b-hf's config.json; tiny is a few MB.
SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
    "tiny": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=1024, max_position_embeddings=4096, rms_norm_eps=1e-5),
}

# Where a forward-only or batch-1 pass was not measured, its cost as a multiple of one training row
# (forward + backward + optimiser share): a LoRA backward computes no gradient of the frozen weights, so
# it costs about one forward; with checkpointing a step holds three forwards' work.
FALLBACK_FORWARD_OF_TRAIN_ROW = 1 / 3
FALLBACK_FISHER_OF_TRAIN_ROW = 1.0


# ---- the preset -----------------------------------------------------------------------------------

def load_preset(path: str | Path = PRESET, base: str | Path = REPO / "config/config.yaml") -> dict:
    """The preset layered over the default config as the workflow sees it (validated, defaults filled)."""
    from snakemake.utils import update_config  # what Snakemake does with a --configfile

    from sers.config import apply_user_experiment, validate_config

    over = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    config = yaml.safe_load(Path(base).read_text(encoding="utf-8")) or {}
    update_config(config, copy.deepcopy(over))
    apply_user_experiment(config, over)
    return validate_config(config, str(path))


def data_sizes(config: dict, **given: int | None) -> dict[str, int]:
    """Rows per task of each split: `given` values, else the preset's data.min_rows (the full NI-c012
    build has exactly those sizes), capped by the config's own row limits."""
    sizes = {}
    for split in ("seeds", "train", "replay", "eval"):
        n = given.get(split) or config["data"]["min_rows"][split]
        if not n:
            raise ValueError(f"rows per task of the {split} split: not in data.min_rows, give it")
        sizes[split] = int(n)
    caps = {"train": config["data"]["max_train_rows"], "eval": config["eval"]["max_rows"],
            "replay": config["data"]["max_replay_rows"]}
    for split, cap in caps.items():
        if cap:
            sizes[split] = min(sizes[split], cap)
    return sizes


# ---- the estimate ---------------------------------------------------------------------------------

def _named_orders(config: dict) -> list[tuple[str, list[str]]]:
    """(run order name, tasks): every order once per replicate, named as the workflow names them."""
    return [(name if r == 1 else f"{name}-rep{r}", tasks) for name, tasks in config["orders"].items()
            for r in range(1, config["replicates"] + 1)]


def _orders(config: dict) -> list[list[str]]:
    return [tasks for _, tasks in _named_orders(config)]


def estimate_gpu_hours(config: dict, measured: dict, sizes: dict[str, int]) -> dict:
    """The config's GPU rules: jobs, work per job and GPU-hours on the measured GPU, one job at a time.

    `measured` (seconds, rows at the config's full lengths): train_row_s (one training row's share of an
    optimiser step), eval_rows_per_s, synthesis_rows_per_s, label_rows_per_s, and optionally
    forward_row_s (a no-grad forward, task_similarity and LwF's teacher) and fisher_row_s (a batch-1
    forward + backward); missing ones are fractions of train_row_s (FALLBACK_*). `sizes`: rows per task
    of seeds, train, replay, eval (`data_sizes`). Returns {"rows": [{rule, jobs, work, hours}], "total_hours",
    "assumptions"}."""
    tr, ev, sy, lb = (measured[k] for k in ("train_row_s", "eval_rows_per_s", "synthesis_rows_per_s",
                                            "label_rows_per_s"))
    fwd = measured.get("forward_row_s") or tr * FALLBACK_FORWARD_OF_TRAIN_ROW
    fisher_s = measured.get("fisher_row_s") or tr * FALLBACK_FISHER_OF_TRAIN_ROW
    methods = list(config["methods"])
    seq_methods = [m for m in methods if m != "mtl"]
    orders = _orders(config)
    all_tasks = list(dict.fromkeys(list(config["tasks"]) + [t for o in orders for t in o]))
    mtl_tasks = list(dict.fromkeys(t for o in orders for t in o))
    syn, evo, sim, t_cfg = config["synthesis"], config["evolution"], config["similarity"], config["training"]
    memory, epochs, n_train, n_eval = config["selection"]["memory"], t_cfg["epochs"], sizes["train"], sizes["eval"]
    n_seeds = sizes["seeds"]
    rows: list[dict] = []

    def add(rule: str, per_job: list[float], seconds: list[float], unit: str) -> None:
        if per_job:
            rows.append({"rule": rule, "jobs": len(per_job), "work_per_job": sum(per_job) / len(per_job),
                         "unit": unit, "hours": sum(seconds) / 3600})

    # synthesize: θ0 writes pseudo inputs per task (mask: prompt-mode infilling; icl: SSR's 2-shot)
    chosen = min(syn["max_seeds"], n_seeds) if syn["max_seeds"] else n_seeds
    per_task = {"mask": syn["retries"] * chosen * min(syn["max_examples"], n_seeds - 1),
                "icl": min(syn["ssr_max_prompts"] or n_seeds * (n_seeds - 1), n_seeds * (n_seeds - 1))
                * syn["ssr_samples"]}
    for kind, wanted in (("mask", MASK_METHODS), ("icl", ICL_METHODS)):
        if wanted & set(methods):
            n = [per_task[kind]] * len(all_tasks)
            add(f"synthesize ({kind})", n, [x / sy for x in n], "rows generated")

    def rehearsal_rows(method: str, stage: int) -> int:
        if method in REAL_REPLAY_METHODS:
            return (stage - 1) * sizes["replay"]
        if method in PSEUDO_METHODS:
            return (stage - 1) * memory
        return 0

    def train_seconds(n_rows: int, n_epochs: float, method: str = "") -> float:
        extra = fwd if method == "lwf" else 0.0  # LwF: the frozen previous adapter's forward on every row
        return n_rows * n_epochs * (tr + extra)

    def per_epoch(n_epochs: list[float]) -> str:
        low, high = min(n_epochs), max(n_epochs)
        return f"training rows × {low:g} epochs" if low == high else f"training rows × {low:g}–{high:g} epochs"

    def epochs_of(order: str | None, method: str | None, stage: int | None) -> float:
        return training_settings(config, order, method, stage)["epochs"]  # training.overrides included

    named = _named_orders(config)
    first = [(n_train, epochs_of(name, None, 1)) for name, _ in named]
    add("train_first_stage", [n for n, _ in first], [train_seconds(n, e) for n, e in first],
        per_epoch([e for _, e in first]))
    stage_rows = [(m, n_train + rehearsal_rows(m, t), epochs_of(name, m, t)) for name, o in named
                  for m in seq_methods for t in range(2, len(o) + 1)]
    add("train_stage", [n for _, n, _ in stage_rows], [train_seconds(n, e, m) for m, n, e in stage_rows],
        per_epoch([e for _, _, e in stage_rows]))
    if "mtl" in methods:
        n, e = n_train * len(mtl_tasks), epochs_of(None, "mtl", None)
        add("train_mtl", [n], [train_seconds(n, e)], per_epoch([e]))

    sim_rows = [min(sim["max_rows"], n_train) + min(sim["max_rows"], rehearsal_rows(m, t))
                for o in orders for m in seq_methods if m in PENALTY_METHODS for t in range(2, len(o) + 1)]
    add("task_similarity", sim_rows, [n * fwd for n in sim_rows], "rows forward")
    if "ewc" in methods:
        n = [min(config["baselines"]["ewc"]["fisher_rows"], n_train) for o in orders for _ in range(1, len(o))]
        add("fisher", n, [x * fisher_s for x in n], "rows forward + backward (batch 1)")

    def label_rows(method: str) -> int:
        se_ratio = 0.0 if method in NO_EVOLUTION_METHODS else evo["se_ratio"]
        base = memory if se_ratio > 0 and evo["hardness"] == "base_disagreement" else 0
        return memory + base + 2 * int(round(se_ratio * memory))  # a blend row decodes θ0 and θt: two rows

    lab = [label_rows(m) for o in orders for m in seq_methods if m in PSEUDO_METHODS for _ in o]
    add("label_rehearsal", lab, [n / lb for n in lab], "rows generated")

    def eval_tasks(order: list[str], stage: int) -> int:
        return len(order) if config["eval"]["all_tasks"] else stage

    ev_rows = [len(mtl_tasks) * n_eval] * (int(config["eval"]["base"]) + int("mtl" in methods))
    ev_rows += [eval_tasks(o, 1) * n_eval for o in orders]  # the first stage's model, shared by the methods
    ev_rows += [eval_tasks(o, t) * n_eval for o in orders for _ in seq_methods for t in range(2, len(o) + 1)]
    add("evaluate", ev_rows, [n / ev for n in ev_rows], "rows generated")

    total = sum(r["hours"] for r in rows)
    kinds = ", ".join(f"{k} {v}" for k, v in per_task.items())
    assumptions = [
        f"Data per task: {sizes['seeds']} seeds, {n_train} training rows, {sizes['replay']} real replay rows, "
        f"{n_eval} eval rows (data.min_rows of the full NI-c012 build, capped by the config's row limits); "
        f"{len(orders)} order run(s) of {', '.join(str(len(o)) for o in orders)} tasks; methods {', '.join(methods)}.",
        f"Training: rows × epochs (training.epochs {epochs:g}, or a training.overrides rule's) × {tr:.4g} s per row (one row's share of the measured optimiser step at "
        "the full prompt + target length); a stage trains on its task's rows plus "
        f"{memory} pseudo rows (selection.memory) or {sizes['replay']} real rows per earlier task; LwF adds one "
        "teacher forward per row; EWC, L2 and O-LoRA terms cost nothing measurable.",
        f"task_similarity: min({sim['max_rows']}, rows) of the new task and of the rehearsal rows, one no-grad "
        f"forward each at the full length ({fwd:.4g} s per row"
        + ("" if measured.get("forward_row_s") else f", assumed {FALLBACK_FORWARD_OF_TRAIN_ROW:.2g} of a training row")
        + f"); fisher: {config['baselines']['ewc']['fisher_rows']} rows, forward + backward at batch 1 "
        f"({fisher_s:.4g} s per row" + ("" if measured.get("fisher_row_s") else
                                         f", assumed {FALLBACK_FISHER_OF_TRAIN_ROW:.2g} of a training row") + ").",
        f"synthesize: rows per task ({kinds}) / {sy:.4g} rows/s (sampled, synthesis.batch_size, "
        "synthesis.max_new_tokens each).",
        f"label_rehearsal: {memory} θt labels per task and stage; with self-evolution the hardest "
        f"{evo['se_ratio']:.0%} again with the blend (two rows each: θ0 and θt), a θ0 pass only with hardness "
        f"base_disagreement; / {lb:.4g} rows/s (greedy, evolution.batch_size, evolution.max_new_tokens each).",
        f"evaluate: one job per model (θ0, the multi-task model, each stage's model), its tasks × {n_eval} rows / "
        f"{ev:.4g} rows/s (greedy, eval.batch_size, eval.max_new_tokens each).",
        "Upper bound: every row at the full max_prompt_tokens (+ max_target_tokens), every generation runs "
        "max_new_tokens (EOS ignored); real NI prompts are shorter and most labels stop long before the cap.",
        "Not counted: model loading per job, queueing, and the CPU rules (filter, MiniLM embeddings, k-means "
        "selection, scoring, metrics, report).",
    ]
    return {"rows": rows, "total_hours": total, "assumptions": assumptions}


def gpu_hours_of_run(run: Path) -> dict:
    """The GPU-hours a run took, from its jobs' records (`run`/benchmarks): {"rows": [{rule, jobs,
    work_per_job, unit, hours}], "total_hours", "assumptions"}, the shape of `estimate_gpu_hours`."""
    from sers.usage import collect_records, gpu_hours

    records = collect_records(run / "benchmarks")
    if not records:
        raise SystemExit(f"{run}/benchmarks: no job records (run the workflow first; each job writes one)")
    measured = gpu_hours(records, GPU_RULES)
    rows = [{**r, "work_per_job": r["hours"] * 3600 / r["jobs"], "unit": "s wall"} for r in measured["rows"]]
    assumptions = [f"Measured: the {sum(r['jobs'] for r in rows)} records of GPU jobs under {run}/benchmarks "
                   f"({len(records)} jobs recorded in all); each GPU job held one GPU for its wall time, model "
                   "loading included. Jobs not yet run, or run before the workflow kept records, are missing."]
    return {"rows": rows, "total_hours": measured["total_hours"], "assumptions": assumptions}


def markdown_table(estimate: dict) -> str:
    """The estimate as a Markdown table with its assumptions under it."""
    def hours(h: float) -> str:
        return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"

    lines = ["| rule | jobs | work per job (mean) | GPU-hours |", "|---|---:|---|---:|"]
    for r in estimate["rows"]:
        lines.append(f"| {r['rule']} | {r['jobs']} | {r['work_per_job']:,.0f} {r['unit']} | {hours(r['hours'])} |")
    lines.append(f"| **total** | {sum(r['jobs'] for r in estimate['rows'])} | | **{hours(estimate['total_hours'])}** |")
    return "\n".join(lines + [""] + [f"- {a}" for a in estimate["assumptions"]]) + "\n"


# ---- the measurements -----------------------------------------------------------------------------

class RandomTokenizer:
    """What `sers.generation` asks of a tokenizer, for random token ids (no vocabulary to decode)."""

    pad_token_id = 0
    eos_token_id = 2

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    """(result, seconds, peak GiB or None). On a GPU the call runs twice and the second is timed (the first
    pays for kernel selection and allocator warm-up) with its peak memory."""
    for _ in range(2 if device.type == "cuda" else 1):
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    return result, time.perf_counter() - start, peak


def build_model(shape: str, device: str, dtype: str, lora: dict, seed: int = 0):
    """A random-initialised LLaMA of `shape`, built on `device` in `dtype`, with a fresh LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from sers.models import lora_target_modules

    cfg = LlamaConfig(**SHAPES[shape], pad_token_id=RandomTokenizer.pad_token_id, bos_token_id=1,
                      eos_token_id=RandomTokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    with torch.device(device):  # straight onto the device, in its dtype: no float32 copy of 7B weights
        try:
            base = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
        except TypeError:  # transformers < 4.56 (a device's own Python) names it torch_dtype
            base = AutoModelForCausalLM.from_config(cfg, torch_dtype=getattr(torch, dtype))
    n_params = sum(p.numel() for p in base.parameters())
    targets = lora_target_modules(base, lora["target_modules"])
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=lora["lora_r"], lora_alpha=lora["lora_alpha"],
                                            lora_dropout=lora["lora_dropout"], target_modules=targets))
    with torch.no_grad():  # a trained-looking adapter (a fresh one has B = 0); the cost is the same either way
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model, n_params


def random_ids(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, length), generator=gen).tolist()


def set_checkpointing(model, on: bool) -> None:
    from sers.training import enable_gradient_checkpointing

    if on:
        enable_gradient_checkpointing(model)
        return
    base = model.get_base_model()
    (base.activation_checkpointing_disable if hasattr(base, "activation_checkpointing_disable")
     else base.gradient_checkpointing_disable)()
    base.disable_input_require_grads()  # the hook checkpointing added; a plain step needs no input grads


def micro_batches(batch: int) -> list[int]:
    """Smaller micro-batch sizes to try: the divisors of `batch`, about halving each time."""
    out, last = [], batch
    for d in range(batch - 1, 0, -1):
        if batch % d == 0 and d <= last // 2:
            out.append(d)
            last = d
    return out


def measure_training(model, examples, t_cfg: dict, device: torch.device, simulate_oom: int = 0) -> dict:
    """Time one optimiser step (batch_size × grad_accum rows) as train_stage runs it; on running out of
    memory retry with gradient checkpointing, then with smaller micro-batches (same effective batch)."""
    from sers.regularisers import lora_l2_penalty
    from sers.training import target_cross_entropy

    params = [p for p in model.parameters() if p.requires_grad]
    batch, accum = t_cfg["batch_size"], t_cfg["grad_accum"]
    rows = examples[:batch * accum]
    use_bf16 = device.type == "cuda"
    attempts: list[dict] = []

    def step(micro: int, optimizer) -> float:
        """The step's loss: the mean over its micro-batches (rows of one length: the full batch's loss)."""
        optimizer.zero_grad(set_to_none=True)
        parts = [rows[i:i + micro] for i in range(0, len(rows), micro)]
        total = 0.0
        for part in parts:
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
            with amp:
                ce, _ = target_cross_entropy(model, part, RandomTokenizer.pad_token_id, False)
            loss = ce + 0.3 * lora_l2_penalty(model)  # a SERS stage's penalty (λ ≈ 0.3): one more tiny term
            (loss / len(parts)).backward()
            total += float(loss.detach()) / len(parts)
        torch.nn.utils.clip_grad_norm_(params, t_cfg["max_grad_norm"])
        optimizer.step()
        return total

    def attempt(micro: int, checkpointing: bool) -> dict:
        set_checkpointing(model, checkpointing)
        model.train()
        rec = {"micro_batch": micro, "grad_accum": len(rows) // micro, "gradient_checkpointing": checkpointing}
        failed = None
        optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)  # lr 0: every attempt sees one model
        try:
            if len(attempts) < simulate_oom:
                raise torch.cuda.OutOfMemoryError("simulated (--simulate-oom)")
            loss, seconds, peak = timed(lambda: step(micro, optimizer), device)
            rec.update(fits=True, step_s=seconds, peak_gib=peak, rows_per_s=len(rows) / seconds, loss=loss)
        except torch.cuda.OutOfMemoryError as e:
            failed = str(e).splitlines()[0][:200]
        # outside the except block: its traceback no longer holds the step's tensors
        optimizer = None  # noqa: F841 - frees the AdamW state before the next attempt
        model.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if failed is not None:
            rec.update(fits=False, error=failed)
        attempts.append(rec)
        print(json.dumps({"training_attempt": rec}), flush=True)
        return rec

    if not attempt(batch, False)["fits"]:
        full_ckpt = attempt(batch, True)["fits"]
        for micro in micro_batches(batch):
            if attempt(micro, False)["fits"]:
                break
        else:
            if not full_ckpt:
                for micro in micro_batches(batch):
                    if attempt(micro, True)["fits"]:
                        break
    set_checkpointing(model, False)
    fits = [a for a in attempts if a["fits"]]
    best = min(fits, key=lambda a: a["step_s"]) if fits else None
    return {"rows_per_step": len(rows), "prompt_tokens": len(rows[0][0]), "target_tokens": len(rows[0][1]),
            "attempts": attempts, "chosen": best}


def measure_forward(model, examples, device: torch.device, batch: int = 8) -> dict:
    """task_similarity's pooled hidden states (batch 8, its default) over whole training sequences."""
    from sers.similarity import pooled_hidden_states

    seqs = [p + t for p, t in examples[:batch]]
    _, seconds, peak = timed(lambda: pooled_hidden_states(model, RandomTokenizer(), seqs, batch_size=batch), device)
    return {"rows": len(seqs), "tokens": len(seqs[0]), "row_s": seconds / len(seqs), "peak_gib": peak}


def measure_fisher(model, examples, device: torch.device, n: int = 2) -> dict:
    """The fisher rule's per-row pass: the row's target CE, backward, batch 1, dropout off."""
    from sers.baselines import diagonal_fisher
    from sers.regularisers import lora_parameters
    from sers.training import target_cross_entropy

    model.eval()
    params = lora_parameters(model)
    losses = lambda: (lambda ex=ex: target_cross_entropy(model, [ex], RandomTokenizer.pad_token_id, False)[0]  # noqa: E731
                      for ex in examples[:n])
    _, seconds, peak = timed(lambda: diagonal_fisher(params, losses()), device)
    return {"rows": n, "row_s": seconds / n, "peak_gib": peak}


def measure_generation(model, prompts, sampling, batch: int, device: torch.device, share_prefix: bool,
                       base: bool = False) -> dict:
    """Rows per second of `sers.generation.generate` (θ0 with the adapter switched off if `base`)."""
    from sers.generation import generate

    model.eval()
    ctx = model.disable_adapter() if base else contextlib.nullcontext()
    with ctx:
        _, seconds, peak = timed(lambda: generate(model, RandomTokenizer(), prompts, sampling, batch, seed=0,
                                                  share_prefix=share_prefix), device)
    return {"rows": len(prompts), "batch": batch, "prompt_tokens": len(prompts[0]),
            "new_tokens": sampling.max_new_tokens, "rows_per_s": len(prompts) / seconds, "peak_gib": peak}


def versions() -> dict:
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "peft": peft.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--preset", default=str(PRESET))
    ap.add_argument("--memory-limit-gib", type=float, default=None,
                    help="cap this process's CUDA memory (79 makes a larger GPU behave like an 80 GB one)")
    ap.add_argument("--prompt-tokens", type=int, help="instead of model.max_prompt_tokens (a quicker check)")
    ap.add_argument("--target-tokens", type=int, help="instead of training.max_target_tokens")
    ap.add_argument("--new-tokens", type=int, help="cap every max_new_tokens (a quicker check)")
    ap.add_argument("--gen-batches", type=int, default=1, help="batches per generation measurement")
    ap.add_argument("--simulate-oom", type=int, default=0,
                    help="treat the first N training attempts as out of memory (checks the fallback on a CPU)")
    ap.add_argument("--out", help="JSON path (default benchmarks/out/paper_cost-<shape>-<device>.json)")
    ap.add_argument("--from-log", type=Path, help="measure nothing: the estimate from the JSON lines a measuring "
                                                   "run printed (one cut off by a time limit, say)")
    ap.add_argument("--from-run", type=Path, help="measure nothing: the GPU-hours a workflow run took, from its "
                                                   "jobs' records (RUN/benchmarks/<rule>/<job>.tsv)")
    args = ap.parse_args()
    if args.from_run:
        print(markdown_table(gpu_hours_of_run(args.from_run)), end="")
        return

    from sers.forward import resolve_shared_prefix
    from sers.generation import Sampling

    config = load_preset(args.preset)
    if args.from_log:
        result, notes = result_from_log(args.from_log)
        # the log holds the prompt length (generation lines) but not the target length: --target-tokens if given
        prompt_len = result["generation"]["evaluate"]["prompt_tokens"]
        target_len = args.target_tokens or config["training"]["max_target_tokens"]
        out = Path(args.out or REPO / f"benchmarks/out/paper_cost-{result['shape']}-{result['device'].split(':')[0]}.json")
        return write_estimate(result, config, prompt_len, target_len, out, notes)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:  # set_per_process_memory_fraction needs an index
        device = torch.device("cuda", torch.cuda.current_device())
    if args.memory_limit_gib and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_limit_gib * GIB / total), device)
    t_cfg, m_cfg = config["training"], config["model"]
    prompt_len = args.prompt_tokens or m_cfg["max_prompt_tokens"]
    target_len = args.target_tokens or t_cfg["max_target_tokens"]

    def new_tokens(n: int) -> int:
        return min(n, args.new_tokens) if args.new_tokens else n

    t0 = time.time()
    model, n_params = build_model(args.shape, args.device, args.dtype, t_cfg)
    vocab = SHAPES[args.shape]["vocab_size"]
    n_rows = t_cfg["batch_size"] * t_cfg["grad_accum"]
    prompts = random_ids(n_rows, prompt_len, vocab, seed=1)
    targets = random_ids(n_rows, target_len, vocab, seed=2)
    examples = list(zip(prompts, targets))
    share = resolve_shared_prefix(t_cfg["shared_prefix"], device)  # random rows share no prefix anyway

    result = {
        "shape": args.shape, "n_params": n_params, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "memory_total_gib": (torch.cuda.get_device_properties(device).total_memory / GIB
                             if device.type == "cuda" else None),
        "memory_limit_gib": args.memory_limit_gib if device.type == "cuda" else None,
        "dtype": args.dtype, "date": date.today().isoformat(), **versions(), "preset": str(args.preset),
        "lora": {k: t_cfg[k] for k in ("lora_r", "lora_alpha", "lora_dropout", "target_modules")},
        "build_s": time.time() - t0,
    }
    print(json.dumps({"model": result}), flush=True)
    result["training"] = measure_training(model, examples, t_cfg, device, args.simulate_oom)
    result["forward"] = measure_forward(model, examples, device)
    print(json.dumps({"forward": result["forward"]}), flush=True)
    result["fisher"] = measure_fisher(model, examples, device)
    print(json.dumps({"fisher": result["fisher"]}), flush=True)
    gen = {}
    for name, section, sampling, base in (
            ("evaluate", "eval", Sampling(max_new_tokens=new_tokens(config["eval"]["max_new_tokens"]),
                                          stop_at_eos=False), False),
            ("synthesize", "synthesis", Sampling(
                do_sample=True, temperature=config["synthesis"]["temperature"], top_p=config["synthesis"]["top_p"],
                repetition_penalty=config["synthesis"]["repetition_penalty"],
                max_new_tokens=new_tokens(config["synthesis"]["max_new_tokens"]), stop_at_eos=False), True),
            ("label", "evolution", Sampling(max_new_tokens=new_tokens(config["evolution"]["max_new_tokens"]),
                                            stop_at_eos=False), False)):
        batch = config[section]["batch_size"]
        rows = random_ids(batch * args.gen_batches, prompt_len, vocab, seed=3)
        gen[name] = measure_generation(model, rows, sampling, batch, device, share, base=base)
        print(json.dumps({name: gen[name]}), flush=True)
    result["generation"] = gen

    result["wall_s"] = time.time() - t0
    write_estimate(result, config, prompt_len, target_len,
                   Path(args.out or REPO / f"benchmarks/out/paper_cost-{args.shape}-{device.type}.json"))


def write_estimate(result: dict, config: dict, prompt_len: int, target_len: int, out: Path,
                   notes: list[str] = ()) -> None:
    """The preset's GPU-hours from `result`'s measurements: `out` (JSON) and the Markdown table beside it."""
    chosen = result["training"]["chosen"]
    if chosen is None:
        result["estimate"] = None
        print(json.dumps(result, indent=2))
        raise SystemExit("no training configuration fits: no estimate")
    gen = result["generation"]
    measured = {"train_row_s": chosen["step_s"] / result["training"]["rows_per_step"],
                "forward_row_s": (result.get("forward") or {}).get("row_s"),
                "fisher_row_s": (result.get("fisher") or {}).get("row_s"),
                "eval_rows_per_s": gen["evaluate"]["rows_per_s"],
                "synthesis_rows_per_s": gen["synthesize"]["rows_per_s"], "label_rows_per_s": gen["label"]["rows_per_s"]}
    estimate = estimate_gpu_hours(config, measured, data_sizes(config))
    estimate["assumptions"][:0] = [
        f"Measured on {result['device_name']} ({result['dtype']}, random {result['shape']}: "
        f"{result['n_params'] / 1e6:,.1f}M parameters), training in micro-batches of {chosen['micro_batch']} × "
        f"{chosen['grad_accum']} with gradient checkpointing {'on' if chosen['gradient_checkpointing'] else 'off'} "
        "(peak " + (f"{chosen['peak_gib']:.1f} GiB" if chosen["peak_gib"] is not None else "not measured on a CPU")
        + f"), prompts of {prompt_len} tokens, targets of {target_len}.", *notes]
    result["measured"] = measured
    result["estimate"] = estimate
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(estimate)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(json.dumps(result, indent=2))
    print()
    print(table)


def result_from_log(log: Path) -> tuple[dict, list[str]]:
    """A measuring run's result rebuilt from the JSON lines it printed (a run cut off by a time limit,
    say), and notes on what it lacks: label generation not measured is taken at the synthesis rate (the
    same batch, prompt length and max_new_tokens in the paper preset; greedy with the blend instead of
    sampling), forward and fisher not measured fall back to fractions of a training row."""
    result, attempts, gen = None, [], {}
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("{") or not line.endswith("}"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{log}:{number}: not a JSON line of paper_cost.py ({e})") from None
        if len(record) != 1:  # the whole result printed at the end of a run: its parts came line by line
            continue
        [(key, value)] = record.items()
        if key == "model":
            result = dict(value)
        elif key == "training_attempt":
            attempts.append(value)
        elif key in ("forward", "fisher") and result is not None:
            result[key] = value
        elif key in ("evaluate", "synthesize", "label"):
            gen[key] = value
    if result is None or not attempts:
        raise SystemExit(f"{log}: no model line or no training attempt: not a log of paper_cost.py")
    fits = [a for a in attempts if a["fits"]]
    rows = attempts[0]["micro_batch"] * attempts[0]["grad_accum"]
    result["training"] = {"rows_per_step": rows, "attempts": attempts,
                          "chosen": min(fits, key=lambda a: a["step_s"]) if fits else None}
    notes = []
    for needed in ("evaluate", "synthesize"):
        if needed not in gen:
            raise SystemExit(f"{log}: no {needed} measurement: no estimate")
    if "label" not in gen:
        gen["label"] = {**gen["synthesize"], "derived_from": "synthesize"}
        notes.append(f"label_rehearsal's rate was not measured (the run was cut off): taken as synthesis's "
                     f"{gen['synthesize']['rows_per_s']:.3g} rows/s, the same batch, prompt length and "
                     "max_new_tokens in the paper preset.")
    for key in ("forward", "fisher"):
        if key not in result:
            notes.append(f"{key} was not measured (the run was cut off): a fraction of a training row, as below.")
    result["generation"] = gen
    result["from_log"] = str(log)
    return result, notes

if __name__ == "__main__":
    main()
