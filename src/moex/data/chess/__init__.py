"""Chess data: vocabulary, PGN/CSV import, self-play generation, training blocks, board-state labels."""

from .vocab import BOS, CHARS, DOT, STOI, VocabError, decode, encode

__all__ = ["BOS", "CHARS", "DOT", "STOI", "VocabError", "decode", "encode"]
