"""Text tokenizers: GPT-2 byte-level BPE through tiktoken, offline, or a small BPE trained on the corpus.

tiktoken downloads its GPT-2 ranks on first use; moex instead reads a ``gpt2.tiktoken`` rank file that a
package ships (the one inside ``openai-whisper``) or one the user names with ``MOEX_GPT2_RANKS``.

A tiny model on a CPU spends most of its step in GPT-2's 50,257-entry output head; ``train_bpe`` learns a
byte-level BPE of a few thousand entries on the corpus itself (the ``tokenizers`` library), saved as
``tokenizer.json``. Data built with it, and every run trained on that data, carry the file; ``load_tokenizer``
gives a directory's tokenizer (its ``tokenizer.json``, else GPT-2) behind one interface, ``TextTokenizer``.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from ...artifacts import atomic_write
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


def gpt2_offsets(text: str) -> tuple[list[int], list[int]]:
    """GPT-2 BPE tokens of ``text`` and each one's start character (moex's offline tokenizer)."""
    enc = gpt2_encoding()
    ids = enc.encode(text, disallowed_special=())
    _, starts = enc.decode_with_offsets(ids)
    return ids, starts


TOKENIZER_FILE = "tokenizer.json"
EOT_TEXT = "<|endoftext|>"


class TextTokenizer:
    """One interface over GPT-2 BPE (``bpe=None``) and a trained BPE (a ``tokenizers.Tokenizer``): token ids,
    their start characters, the end-of-text id that separates documents, the vocabulary size."""

    def __init__(self, bpe=None):
        self.bpe = bpe
        if bpe is not None:
            bpe.encode_special_tokens = True  # "<|endoftext|>" in a text is characters, as with GPT-2
        self.name = "bpe" if bpe is not None else "gpt2"
        self.vocab_size = bpe.get_vocab_size() if bpe is not None else VOCAB_SIZE
        self.eot = bpe.token_to_id(EOT_TEXT) if bpe is not None else EOT

    def encode(self, text: str) -> list[int]:
        """Tokens of ``text``; ``<|endoftext|>`` inside it is ordinary characters."""
        if self.bpe is None:
            return encode(text)
        return self.bpe.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        return decode(tokens) if self.bpe is None else self.bpe.decode(tokens, skip_special_tokens=False)

    def offsets(self, text: str) -> tuple[list[int], list[int]]:
        """Tokens of ``text`` and each one's start character."""
        if self.bpe is None:
            return gpt2_offsets(text)
        enc = self.bpe.encode(text, add_special_tokens=False)
        return enc.ids, [a for a, _ in enc.offsets]

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` into ``directory`` (GPT-2 needs no file)."""
        if self.bpe is not None:
            atomic_write(Path(directory) / TOKENIZER_FILE, self.bpe.save)


def train_bpe(texts, vocab_size: int) -> TextTokenizer:
    """A byte-level BPE of ``vocab_size`` entries (``<|endoftext|>`` included) learned on ``texts`` (an
    iterable of strings), with GPT-2's pre-tokenisation, so its tokens are GPT-2-like words and pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not 256 < vocab_size <= 65535:
        raise TokenizerError(f"vocab_size={vocab_size} must be in 257..65535 (256 bytes + merges; uint16 shards)")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    return TextTokenizer(bpe)


def load_tokenizer(directory: str | Path | None) -> TextTokenizer:
    """The tokenizer of a data or run directory (or a run's checkpoint): its ``tokenizer.json``, else GPT-2 BPE."""
    path = Path(directory) / TOKENIZER_FILE if directory is not None else None
    if path is not None and not path.is_file() and path.parent.name.startswith("ckpt-"):
        path = path.parent.parent / TOKENIZER_FILE
    if path is None or not path.is_file():
        return TextTokenizer()
    from tokenizers import Tokenizer

    try:
        bpe = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise TokenizerError(f"{path}: not a tokenizers file ({str(e).splitlines()[0]})") from None
    if bpe.token_to_id(EOT_TEXT) is None:
        raise TokenizerError(f"{path}: has no {EOT_TEXT} token (make it with `moex data text tokenizer`)")
    return TextTokenizer(bpe)
