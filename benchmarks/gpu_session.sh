#!/usr/bin/env bash
# The prepared device check for the GPU path (issue "The GPU path"), as one script for a lent GPU.
#
#   bash benchmarks/gpu_prepare.sh                        # here, once: fills .device/ (wheels, tokenizer, encoder)
#   run(command="bash benchmarks/gpu_session.sh", carry=[".device"], timeout_s=480)
#   tar xzf <files_at>/gpu-session.tar.gz && .venv/bin/python benchmarks/gpu_report.py gpu   # the Markdown
#
# The device has no network and its image holds torch but not snakemake and other locked packages:
# the wheels in .device/wheels (the lock's versions) go to /tmp/site, ahead of the image's packages.
# Without .device/wheels it uses the Python it finds (PY; .venv/bin/python if there is one).
#
# Steps, most wanted first, each under its own time limit so that one slow step cannot starve the rest
# (STEPS picks and orders them; default "1 7 6 3", issue 31's device part, sized to end within
# DEADLINE=470 s so that a rerun fits in a session's 15 minutes; step 2 ran on an H200 on 2026-11-28,
# benchmarks/results/gpu-h200-2026-11-28, and most of step 4; "1 6 5 3 4" was the previous default):
#   1. the machine: GPU, torch/CUDA, transformers, peft, snakemake, sentence-transformers;
#   7. evaluation before and after issue 31 on a random LLaMA-2-7B (its exact shapes, bf16, a random
#      LoRA on q/v) at 512 new tokens, prompts of 512-1024 random tokens, no EOS (every row runs
#      to 512): rows/s and peak memory of the path before (Decoding BEFORE) at batch 16, of today's
#      path at batch 16 (rows identical to before, of 16; and with the KV cache grown by concatenation,
#      the layout alone), and of today's path at the batch
#      fit_batch_size chooses for an 80 GB card (--memory-limit-gib 79); generation-*-eval.json;
#   6. step 2's shared-prefix part alone, after the packed layout (sers.prefix_packing): training
#      tokens/s of the plain, two-pass and packed layouts and of the one chosen per batch, on the ~1B
#      model where two passes' twice the kernel launches made the shared prefix 0.55-0.67x of plain,
#      with a profile of one batch of each layout; greedy evaluation shared vs plain; packed vs
#      two-pass on synthetic batch shapes beside the FLOP count (the data for PACKED_FLOP_MARGIN);
#   4. paper_cost.py on a random-initialised LLaMA-2-7B shape in bf16 with the paper preset's LoRA,
#      batch and lengths, memory capped at 79 GiB (an 80 GB GPU, also on an H200): one training step
#      (full batch, gradient checkpointing or micro-batches, whichever fits), its time and peak memory,
#      the similarity and Fisher passes, eval / synthesis / label generation rows per second, and the
#      preset's GPU-hours per rule (paper_cost-cuda.json and .md); no tokenizer or weights. Cut off by
#      its limit, its log still gives the estimate: paper_cost.py --from-log step4.log;
#   5. the shared prefix vs plain (each layout, as in step 6), training and evaluation, on a
#      LLaMA-2-7B-sized random model (BENCH7B_ARGS): on the 1B model the two-pass layout did a third of
#      the GPU work but twice the kernel launches, and the host bounded the step; at 7B the GPU may
#      bound it instead. Also blend
#      decoding at α = 1 and α = 0 against plain greedy θ0 and θt (identical tokens, bf16);
#   2. bench_generation.py on a random-initialised ~1B LLaMA in bf16 (warm, second run kept): batched
#      synthesis, blend decoding vs the reference loop, vs the same blend routed by peft's mixed-adapter
#      batches and vs plain greedy, with the host syncs per decoding step of each; shared-prefix
#      training/evaluation vs plain, with a torch.profiler table of one training batch of each layout
#      (which attention kernel SDPA picked); peak memory of blend vs plain;
#   3. the tiny experiment (config/tiny.yaml with TINY_METHODS: six methods that take every GPU rule)
#      on CUDA (TINY_DEVICES); its losses, predictions, rehearsal sets and matrices come back, and
#      benchmarks/compare_runs.py sets them against a CPU run of the same config made on the host.
# Everything lands in $WORK and, after every step, in $OUT/gpu-session.tar.gz (plus $OUT/summary.txt):
# a device call returns at most 8 files from $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu-bundle}
WORK=${WORK:-benchmarks/out/gpu}
CARRIED=${CARRIED:-.device}
STEPS=${STEPS:-1 7 6 3}
DEADLINE=${DEADLINE:-470}  # seconds from the start: later steps are shortened to end by then
CORES=${CORES:-12}
# step 3's methods: each GPU rule at least once (synthesize: sers mask, ssr icl; similarity and label:
# sers; fisher: ewc; LwF's teacher; O-LoRA's stack; train and evaluate: all) at half tiny.yaml's jobs
TINY_METHODS=${TINY_METHODS:-seq sers ssr ewc lwf olora}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu with small PAPER_ARGS / BENCH_ARGS rehearses the script on a CPU
# CUDA only: the CPU run of the same config is made on the host (compare_runs.py), not in device time
TINY_DEVICES=${TINY_DEVICES:-$DEVICE}
DTYPE=${DTYPE:-bfloat16}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false SERS_NO_PROGRESS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
SUMMARY="$WORK/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
bundle() { tar czf "$OUT/gpu-session.tar.gz" -C "$(dirname "$WORK")" "$(basename "$WORK")" && cp "$SUMMARY" "$OUT/"; }

if [[ -z "${PY:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
SITE=""
if compgen -G "$CARRIED/wheels/*.whl" > /dev/null; then
    start=$SECONDS
    $PY -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$CARRIED"/wheels/*.whl || { say "installing $CARRIED/wheels failed"; bundle; exit 1; }
    SITE=/tmp/site
    say "installed $(ls "$CARRIED"/wheels/*.whl | wc -l) carried wheels into /tmp/site in $((SECONDS - start)) s"
fi
export PYTHONPATH="${SITE:+$SITE:}src${PYTHONPATH:+:$PYTHONPATH}"
TOKENIZER=${TOKENIZER:-$CARRIED/tokenizer}
PAPER_ARGS=${PAPER_ARGS:---shape llama2-7b --memory-limit-gib 79}
BENCH_ARGS=${BENCH_ARGS:---model random-1b --tokenizer $TOKENIZER --rows 32 --batch 16 --new-tokens 48 --reference-rows 4 --prefix-task pos sa}
# a LLaMA-2-7B-sized model (hidden 4096, 32 layers): is the shared prefix faster where the GPU bounds a step?
BENCH7B_ARGS=${BENCH7B_ARGS:---model random-1b --tokenizer $TOKENIZER --random-hidden 4096 --random-layers 32 --rows 16 --batch 8 --new-tokens 32 --only blend_ends prefix --prefix-task pos sa}
# step 7: evaluation before/after issue 31 at the paper preset's lengths, on LLaMA-2-7B's shapes
EVAL_ARGS=${EVAL_ARGS:---model random-llama2-7b --rows 16 --batch 16 --new-tokens 512 --prompt-tokens 1024 --memory-limit-gib 79}
export PY WORK CARRIED CORES DEVICE DTYPE PAPER_ARGS BENCH_ARGS BENCH7B_ARGS EVAL_ARGS TINY_METHODS TINY_DEVICES

# run_step N LIMIT_S CMD...: a step under its own time limit; its output goes to $WORK/stepN.log
run_step() {
    local n=$1 limit=$2
    shift 2
    local start=$SECONDS
    if [[ -n "${DEADLINE:-}" ]] && (( DEADLINE - SECONDS - 15 < limit )); then limit=$((DEADLINE - SECONDS - 15)); fi
    if (( limit < 10 )); then say "step $n: skipped, ${DEADLINE} s deadline"; return; fi
    echo "== step $n (limit ${limit} s)"
    STEP_LIMIT=$limit timeout --kill-after=10 "$limit" bash -c "$*" > "$WORK/step$n.log" 2>&1
    local rc=$?
    say "step $n: exit $rc after $((SECONDS - start)) s$([[ $rc == 124 ]] && echo ' (time limit)')"
    tail -n 25 "$WORK/step$n.log"
    bundle
}

step1() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
    $PY - <<'EOF'
import importlib
import platform

import torch

print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB")
for name in ("transformers", "peft", "snakemake", "sentence_transformers", "tokenizers", "numpy", "rouge_score"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), module.__file__)
    except Exception as e:  # report, do not stop: the later steps say what they need
        print(name, "MISSING", e)
EOF
}

step2() {
    rm -f benchmarks/out/generation-*.json benchmarks/out/profiles/*.txt
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
    $PY benchmarks/bench_generation.py $BENCH_ARGS --device "$DEVICE" --dtype "$DTYPE" --profile || return
    cp benchmarks/out/generation-*-"$DEVICE".json "$WORK/"
    mkdir -p "$WORK/profiles" && cp benchmarks/out/profiles/*.txt "$WORK/profiles/"
}

step3() {
    local device rc=0
    echo "methods: [$(echo $TINY_METHODS | sed 's/ /, /g')]" > "$WORK/tiny-methods.yaml"
    for device in $TINY_DEVICES; do
        # under the step's own limit less a margin, so that what is made so far is still copied;
        # --max-threads 1: one-thread jobs side by side, as in the 160 s run of 2026-11-28 (with the GPU
        # rules' threads: 8, one GPU job at a time would fit in 12 cores; the jobs are start-up-bound)
        timeout $((${STEP_LIMIT:-600} - 8)) $PY -m snakemake --cores "$CORES" --max-threads 1 --scheduler greedy \
            --configfile config/tiny.yaml "$CARRIED/tiny-device.yaml" "$WORK/tiny-methods.yaml" \
            --config device="$device" run="tiny-$device" > "$WORK/tiny-$device.log" 2>&1 || {
            echo "the tiny experiment on $device failed: $WORK/tiny-$device.log"
            tail -n 40 "$WORK/tiny-$device.log"
            rc=1
        }
        # what benchmarks/compare_runs.py compares, for a CPU run of the same config on the host
        mkdir -p "$WORK/tiny" && find "results/tiny-$device" \( -name matrix.csv -o -name loss.jsonl \
            -o -name eval_generations.jsonl -o -name rehearsal.jsonl \) -exec cp --parents {} "$WORK/tiny/" \;
    done
    if [[ -d results/tiny-cpu && -d "results/tiny-$DEVICE" && "$DEVICE" != cpu ]]; then
        $PY benchmarks/compare_runs.py results/tiny-cpu "results/tiny-$DEVICE" --json "$WORK/tiny-compare.json"
    fi
    return $rc
}

step6() {
    rm -f benchmarks/out/generation-*.json benchmarks/out/profiles/*.txt
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
    $PY benchmarks/bench_generation.py $BENCH_ARGS --only prefix layout_shapes --device "$DEVICE" --dtype "$DTYPE" \
        --profile || return
    local f
    for f in benchmarks/out/generation-*-"$DEVICE".json; do cp "$f" "$WORK/$(basename "$f" .json)-prefix.json"; done
    mkdir -p "$WORK/profiles" && cp benchmarks/out/profiles/*.txt "$WORK/profiles/"
}

step5() {
    # the shared prefix where the GPU, not the host, bounds a step: a LLaMA-2-7B-sized random model
    rm -f benchmarks/out/generation-*.json
    # shellcheck disable=SC2086
    $PY benchmarks/bench_generation.py $BENCH7B_ARGS --device "$DEVICE" --dtype "$DTYPE" || return
    cp benchmarks/out/generation-*-"$DEVICE".json "$WORK/"
}

step7() {
    rm -f benchmarks/out/generation-*.json
    # shellcheck disable=SC2086  # EVAL_ARGS is a list of arguments
    $PY benchmarks/bench_generation.py $EVAL_ARGS --only eval_paths --device "$DEVICE" --dtype "$DTYPE" || return
    local f
    for f in benchmarks/out/generation-*-"$DEVICE".json; do cp "$f" "$WORK/$(basename "$f" .json)-eval.json"; done
}

step4() {
    # shellcheck disable=SC2086
    $PY benchmarks/paper_cost.py $PAPER_ARGS --device "$DEVICE" --dtype "$DTYPE" --out "$WORK/paper_cost-$DEVICE.json"
}
export -f step1 step2 step3 step4 step5 step6 step7

# Each step's limit (LIMIT_N overrides it), cut so that all end by DEADLINE, for a call's timeout_s of 480.
# On an H200, 2026-11-28: step 1 took 21 s; step 4 ran past 140 s (build 2 s, four training attempts,
# evaluation and synthesis each timed twice, cut before labelling); step 2 took 64 s for the shared-prefix
# part alone and ran past 150 s in all; step 3's CUDA run of six methods took 160 s.
# Rehearsed on this 2-core CPU (DEVICE=cpu, tiny shapes; the carried wheels are for the device image's
# Python, leave them out here); on 2026-11-29 all six steps passed (1: 8 s, 6: 13 s, 4: 19 s, 5: 7 s,
# 2: 24 s, 3: 172 s) and gpu_report.py rendered the bundle:
#   mkdir -p /tmp/r && ln -s $PWD/.device/{tokenizer,embedder,tiny-device.yaml} /tmp/r/ &&
#   CARRIED=/tmp/r DEVICE=cpu DTYPE=float32 CORES=2 OUT=/tmp/r/out WORK=/tmp/r/work PAPER_ARGS="--shape tiny" \
#   BENCH_ARGS="--model random-1b --tokenizer /tmp/r/tokenizer --random-hidden 64 --random-layers 2 --rows 8 \
#   --batch 4 --new-tokens 8 --reference-rows 2 --prefix-task pos sa" BENCH7B_ARGS="--model random-1b \
#   --tokenizer /tmp/r/tokenizer --random-hidden 64 --random-layers 2 --rows 8 --batch 4 --new-tokens 8 \
#   --only blend_ends prefix --prefix-task pos" STEPS="1 6 4 5 2 3" bash benchmarks/gpu_session.sh
# Issue 31's default "1 7 6 3" (estimates, not yet run): 1 about 20 s; 7 about 60-100 s (a 7B build,
# 512 decoding steps at batch 16 three times and once at the fitted batch, each after a 2-token warm-up);
# 6 ran 64 s for its shared-prefix part on an H200, with layout_shapes about 90 s; 3 took 160 s.
declare -A LIMIT=([1]=30 [2]=200 [3]=170 [4]=210 [5]=150 [6]=110 [7]=150)
for n in $STEPS; do
    limit_var="LIMIT_$n"
    run_step "$n" "${!limit_var:-${LIMIT[$n]}}" "step$n"
done
say "done: steps $STEPS"
bundle
