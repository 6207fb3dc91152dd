"""GPT-2 byte-level BPE through tiktoken, offline.

tiktoken downloads its GPT-2 ranks on first use; moex instead reads a ``gpt2.tiktoken`` rank file that a
package ships (the one inside ``openai-whisper``) or one the user names with ``MOEX_GPT2_RANKS``.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from ...errors import MoexError

EOT = 50256  # <|endoftext|>
VOCAB_SIZE = 50257
# GPT-2's pre-tokenisation pattern (tiktoken's r50k_base).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
INSTALL_HINT = ("pip install tiktoken openai-whisper (whisper ships the GPT-2 ranks as gpt2.tiktoken), "
                "or set MOEX_GPT2_RANKS=/path/to/gpt2.tiktoken")


class TokenizerError(MoexError):
    """The GPT-2 tokeniser cannot be built."""


def ranks_path() -> Path:
    """Where the GPT-2 rank file is: ``$MOEX_GPT2_RANKS``, else openai-whisper's asset."""
    env = os.environ.get("MOEX_GPT2_RANKS")
    if env:
        if not Path(env).is_file():
            raise TokenizerError(f"MOEX_GPT2_RANKS={env}: no such file")
        return Path(env)
    spec = importlib.util.find_spec("whisper")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "assets" / "gpt2.tiktoken"
        if path.is_file():
            return path
    raise TokenizerError(f"GPT-2 BPE ranks not found: {INSTALL_HINT}")


def load_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken rank file: one ``base64(token) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise TokenizerError(f"{path}:{n}: not a 'base64-token rank' line ({e})") from None
    return ranks


@lru_cache(maxsize=1)
def gpt2_encoding():
    """The GPT-2 ``tiktoken.Encoding`` (50,257 tokens, ``<|endoftext|>`` = 50256)."""
    try:
        import tiktoken
    except ImportError:
        raise TokenizerError(f"tiktoken is not installed: {INSTALL_HINT}") from None
    path = ranks_path()
    ranks = load_ranks(path)
    if len(ranks) != EOT:
        raise TokenizerError(f"{path}: {len(ranks)} ranks, GPT-2 has {EOT} (is this the gpt2 file?)")
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT})


def encode(text: str) -> list[int]:
    """GPT-2 tokens of ``text``; ``<|endoftext|>`` inside the text is encoded as ordinary characters."""
    return gpt2_encoding().encode_ordinary(text)


def decode(tokens: list[int]) -> str:
    return gpt2_encoding().decode(tokens)
