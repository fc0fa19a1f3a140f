"""Glue for the thin scripts in workflow/scripts: user errors without tracebacks, logging to the
rule's log file, and loading θ0 from the `model` params every GPU rule receives."""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

from .errors import SersError

log = logging.getLogger("sers")


@contextlib.contextmanager
def script_context(log_path: str | None = None) -> Iterator[logging.Logger]:
    """Log to the rule's log file and stderr; turn a SersError into one clear line and exit 1."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", handlers=handlers, force=True)
    try:
        yield log
    except SersError as e:
        log.error("error: %s", e)
        sys.exit(1)


def load_base(model: dict):
    """(model, tokenizer) of θ0 from a rule's `model` params."""
    from .models import load_model, load_tokenizer

    tok = load_tokenizer(model["path"], model["trust_remote_code"])
    return load_model(model["path"], model["device"], model["dtype"], model["trust_remote_code"]), tok


def load_adapted(model: dict, adapter_dir: str):
    """(θt, tokenizer): θ0 with a stage's LoRA adapter (named "default"); θ0 is θt with it disabled."""
    from .models import load_tokenizer, load_with_adapter

    tok = load_tokenizer(model["path"], model["trust_remote_code"])
    return load_with_adapter(model["path"], adapter_dir, device=model["device"], dtype=model["dtype"],
                             trust_remote_code=model["trust_remote_code"]), tok
