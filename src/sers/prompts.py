"""How a row becomes model tokens: the task prompt in one of three formats, the target (the
reference output followed by EOS) that training and scoring use, and the BOS token.

Formats (`model.prompt_format`):
- `plain`: the task prompt followed by "\\n\\nOutput:" — for base models;
- `chat_template`: the tokenizer's own chat template (one user turn, generation prompt added);
- `llama2`: the LLaMA-2 chat format with its default system prompt, as the LLaMA-Efficient-Tuning
  `llama2` template that the SERS and SSR reference code trained, labelled and evaluated with
  (`--template llama2`, even for the base LLaMA-2-7B).

BOS: every encoded prompt starts with the tokenizer's BOS token where the tokenizer adds one to plain
text (LLaMA, Mistral) and the formatted text does not already carry it (a chat template that writes
"<s>" itself) — in training, labelling, similarity and evaluation (LLaMA-Factory's template adds it), and
in synthesis unless `synthesis.add_bos` is false (the reference's synthesis prompts had none).
"""
from __future__ import annotations

import weakref

from .errors import SersError

PROMPT_FORMATS = ("plain", "chat_template", "llama2")
PLAIN_CUE = "\n\nOutput:"  # without a chat format the answer follows this cue
TAIL_KEEP = 16  # on truncation keep the prompt's end, where the answer cue sits
LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering something "
    "not correct. If you don't know the answer to a question, please don't share false information."
)
LLAMA2_TEMPLATE = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{prompt} [/INST] "


def check_format(fmt: str) -> str:
    if fmt not in PROMPT_FORMATS:
        raise SersError(f"model.prompt_format: {fmt!r} is not one of {', '.join(PROMPT_FORMATS)}")
    return fmt


_BOS_BY_TOKENIZER: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def bos_ids(tokenizer) -> list[int]:
    """[BOS] if the tokenizer puts one before plain text (it "expects" one), else []; probed once per
    tokenizer, since every encoded prompt asks."""
    try:
        return list(_BOS_BY_TOKENIZER[tokenizer])
    except (KeyError, TypeError):
        pass
    bos = tokenizer.bos_token_id
    probe = tokenizer("a", add_special_tokens=True).input_ids if bos is not None else []
    found = (bos,) if probe and probe[0] == bos else ()
    try:
        _BOS_BY_TOKENIZER[tokenizer] = found
    except TypeError:  # an object that cannot be weakly referenced: probe every time
        pass
    return list(found)


def with_bos(tokenizer, ids: list[int]) -> list[int]:
    """`ids` with the tokenizer's BOS in front, unless it is there already or the model has none."""
    bos = bos_ids(tokenizer)
    return bos + list(ids) if bos and (not ids or ids[0] != bos[0]) else list(ids)


def encode_plain(tokenizer, text: str, bos: bool = True) -> list[int]:
    """Raw text (a synthesis prompt, a span context) as the model reads it: BOS where it expects one,
    unless `bos` is false (the reference's synthesis prompts: its text-generation pipeline tokenised
    with add_special_tokens=False under transformers 4.36)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return with_bos(tokenizer, ids) if bos else list(ids)


def prompt_text(tokenizer, full_prompt: str, fmt: str) -> str:
    check_format(fmt)
    if fmt == "chat_template":
        if not getattr(tokenizer, "chat_template", None):
            raise SersError("model.prompt_format: chat_template, but the model's tokenizer has no chat template "
                            "(use plain or llama2)")
        return tokenizer.apply_chat_template([{"role": "user", "content": full_prompt}],
                                             add_generation_prompt=True, tokenize=False)
    if fmt == "llama2":
        return LLAMA2_TEMPLATE.format(system=LLAMA2_SYSTEM, prompt=full_prompt)
    return full_prompt + PLAIN_CUE


def target_text(output: str, fmt: str) -> str:
    """The answer as it follows the prompt: after the plain cue a space, else the bare output."""
    return " " + output if check_format(fmt) == "plain" else output


def truncate(ids: list[int], max_tokens: int) -> list[int]:
    """Keep the head (BOS, the shared instruction) and the tail (the answer cue) of an over-long prompt."""
    if len(ids) <= max_tokens:
        return ids
    tail = min(TAIL_KEEP, max_tokens // 4)
    return ids[: max_tokens - tail] + ids[-tail:]


def encode_prompt(tokenizer, full_prompt: str, fmt: str, max_tokens: int = 1024) -> list[int]:
    return truncate(encode_plain(tokenizer, prompt_text(tokenizer, full_prompt, fmt)), max_tokens)


def encode_target(tokenizer, output: str, fmt: str, max_tokens: int = 512) -> list[int]:
    ids = tokenizer(target_text(output, fmt), add_special_tokens=False).input_ids
    return ids[: max_tokens - 1] + [tokenizer.eos_token_id]


def encode_example(tokenizer, full_prompt: str, output: str, fmt: str, max_prompt_tokens: int = 1024,
                   max_target_tokens: int = 512) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) of one supervised row."""
    return (encode_prompt(tokenizer, full_prompt, fmt, max_prompt_tokens),
            encode_target(tokenizer, output, fmt, max_target_tokens))
