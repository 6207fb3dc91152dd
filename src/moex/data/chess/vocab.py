"""The 32-character chess vocabulary of Karvonen's nanoGPT lichess models (METHODS sec 3)."""

from __future__ import annotations

import numpy as np

from ...errors import MoexError

CHARS = " #+-.0123456789;=BKNOQRabcdefghx"
assert len(CHARS) == 32
STOI = {c: i for i, c in enumerate(CHARS)}
BOS = STOI[";"]  # 15: starts every game
DOT = STOI["."]  # 4: the evaluation positions

_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(CHARS):
    _LUT[ord(_c)] = _i


class VocabError(MoexError):
    """A character outside the 32-character chess vocabulary."""


def find_bad_char(text: str) -> int:
    """Index of the first character outside the vocabulary, or -1."""
    for i, ch in enumerate(text):
        if ch not in STOI:
            return i
    return -1


def encode(text: str, where: str = "input") -> np.ndarray:
    """Characters -> uint8 ids. An unknown character raises ``VocabError`` naming ``where`` and the column."""
    raw = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8) if text.isascii() else None
    if raw is not None:
        ids = _LUT[raw]
        if not (ids == 255).any():
            return ids
    col = find_bad_char(text)
    raise VocabError(f"{where}: character {text[col]!r} at column {col + 1} is not in the chess vocabulary")


def decode(ids) -> str:
    return "".join(CHARS[int(i)] for i in ids)
