"""How a row becomes model tokens: the task prompt, optionally in the model's chat template, and
the target (the reference output followed by EOS) that training and scoring use."""
from __future__ import annotations

PLAIN_CUE = "\n\nOutput:"  # without a chat template the answer follows this cue
TAIL_KEEP = 16  # on truncation keep the prompt's end, where the answer cue sits


def prompt_text(tokenizer, full_prompt: str, chat_template: bool) -> str:
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": full_prompt}],
                                             add_generation_prompt=True, tokenize=False)
    return full_prompt + PLAIN_CUE


def target_text(output: str, chat_template: bool, tokenizer=None) -> str:
    uses_template = chat_template and getattr(tokenizer, "chat_template", None)
    return output if uses_template else " " + output


def truncate(ids: list[int], max_tokens: int) -> list[int]:
    """Keep the head (the shared instruction) and the tail (the answer cue) of an over-long prompt."""
    if len(ids) <= max_tokens:
        return ids
    tail = min(TAIL_KEEP, max_tokens // 4)
    return ids[: max_tokens - tail] + ids[-tail:]


def encode_prompt(tokenizer, full_prompt: str, chat_template: bool, max_tokens: int = 1024) -> list[int]:
    ids = tokenizer(prompt_text(tokenizer, full_prompt, chat_template), add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and not chat_template and getattr(tokenizer, "add_bos_token", False):
        ids = [tokenizer.bos_token_id] + ids
    return truncate(ids, max_tokens)


def encode_target(tokenizer, output: str, chat_template: bool, max_tokens: int = 512) -> list[int]:
    ids = tokenizer(target_text(output, chat_template, tokenizer), add_special_tokens=False).input_ids
    return ids[: max_tokens - 1] + [tokenizer.eos_token_id]


def encode_example(tokenizer, full_prompt: str, output: str, chat_template: bool, max_prompt_tokens: int = 1024,
                   max_target_tokens: int = 512) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) of one supervised row."""
    return (encode_prompt(tokenizer, full_prompt, chat_template, max_prompt_tokens),
            encode_target(tokenizer, output, chat_template, max_target_tokens))
