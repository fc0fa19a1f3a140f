"""Progress bars with an ETA for long steps (tqdm on stderr; plain lines when not a terminal)."""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterable[T]:
    """Wrap an iterable; in logs (no TTY) print a line every ~10 % rather than redrawing."""
    interactive = sys.stderr.isatty()
    return tqdm(items, desc=desc, unit=unit, total=total, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if interactive else 30.0, disable=os.environ.get("SERS_NO_PROGRESS") == "1")
