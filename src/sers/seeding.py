"""Deterministic seeds: every random choice derives from config `seed` and the names involved."""
from __future__ import annotations

import zlib


def derive_seed(base: int, *keys: object) -> int:
    """A stable 31-bit seed for (base, keys…): the same names always give the same seed."""
    text = "/".join(str(k) for k in (base, *keys))
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF
