"""Text corpora -> token shards (uint16; GPT-2 BPE, or a ``tokenizer.json`` from ``train_bpe``) + ``meta.json``,
the layout ``BlockData`` reads. A trained tokenizer is copied beside the shards, so runs find it.

Sources: plain text files (one document per file), JSONL and parquet files with a text column, and
Hugging Face datasets by name (``hf:NAME[:CONFIG]``, streamed; needs ``datasets`` and the network).
Every document is preceded by ``<|endoftext|>``, so documents are separated by it. Every
1/``val_fraction``-th document goes to validation (by index, so rebuilding is identical); a corpus of
fewer documents than that holds out the tail of its token stream instead.
Shards hold at most ``shard_tokens`` tokens; a shard is written to a temporary name, then renamed.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from ...progress import progress_bar

from ...artifacts import write_json
from ..loader import DataError
from .tokenizer import TextTokenizer, load_tokenizer, train_bpe


@dataclass
class Document:
    source: str  # file:line or dataset:index, for error messages
    text: str


def _check_text(path: Path, data: bytes) -> str:
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in data[:65536]:
        raise DataError(f"{path}: looks binary (NUL bytes), not a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def sniff_text(path: str | Path) -> None:
    """The checks of ``_check_text`` on the first 64 KiB of a file (cut at a line end), for readers that stream
    a file rather than load it: an empty, binary or non-UTF-8 file is one error naming it."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(65536)
    if len(data) == 65536 and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]
    _check_text(path, data)


def read_text_file(path: Path) -> Iterator[Document]:
    yield Document(str(path), _check_text(path, path.read_bytes()))


def read_jsonl(path: Path, column: str) -> Iterator[Document]:
    text = _check_text(path, path.read_bytes())
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or column not in row:
            keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{path}:{n}: no {column!r} field (found: {keys}); choose one with --column")
        if not isinstance(row[column], str):
            raise DataError(f"{path}:{n}: field {column!r} is {type(row[column]).__name__}, not text")
        yield Document(f"{path}:{n}", row[column])


def read_parquet(path: Path, column: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    if column not in f.schema_arrow.names:
        raise DataError(f"{path}: no {column!r} column (found: {', '.join(f.schema_arrow.names)}); "
                        "choose one with --column")
    row = 0
    for batch in f.iter_batches(columns=[column]):
        for value in batch.column(0).to_pylist():
            row += 1
            if value is not None:
                yield Document(f"{path} row {row}", value)


def read_hf(name: str, column: str, split: str) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name}: Hugging Face datasets need `pip install datasets` and the network") from None
    repo, _, config = name[3:].partition(":")
    ds = datasets.load_dataset(repo, config or None, split=split, streaming=True)
    for i, row in enumerate(ds):
        if column not in row:
            raise DataError(f"{name}: no {column!r} column (found: {', '.join(row)})")
        yield Document(f"{name} #{i}", row[column])


def read_source(source: str, column: str = "text", hf_split: str = "train") -> Iterator[Document]:
    """Documents of one source: a file (by suffix), a directory of files, or ``hf:NAME[:CONFIG]``."""
    if source.startswith("hf:"):
        yield from read_hf(source, column, hf_split)
        return
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise DataError(f"{path}: the directory holds no files")
        for p in files:
            yield from read_source(str(p), column, hf_split)
        return
    if not path.exists():
        raise DataError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith((".jsonl", ".json")):
        yield from read_jsonl(path, column)
    elif name.endswith(".parquet"):
        yield from read_parquet(path, column)
    else:
        yield from read_text_file(path)


_TOKENIZER = TextTokenizer()  # set in each worker by _use_tokenizer


def _use_tokenizer(directory: str | None) -> None:
    global _TOKENIZER
    _TOKENIZER = load_tokenizer(directory)


def read_sources(sources: list[str], column: str = "text", hf_split: str = "train",
                 max_docs: int | None = None) -> Iterator[Document]:
    """The documents of every source in turn, at most ``max_docs`` of them."""
    return itertools.islice((doc for src in sources for doc in read_source(src, column, hf_split)), max_docs)


def _tokenize(doc: Document) -> np.ndarray:
    return np.array([_TOKENIZER.eot, *_TOKENIZER.encode(doc.text)], dtype=np.uint16)


@dataclass
class ShardWriter:
    """Appends tokens to ``{split}-NNNNNN.bin`` files of at most ``shard_tokens`` tokens each."""

    out: Path
    split: str
    shard_tokens: int
    files: list[str] = field(default_factory=list)
    n_tokens: int = 0
    _buf: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0

    def add(self, tokens: np.ndarray) -> None:
        self._buf.append(tokens)
        self._buffered += tokens.size
        self.n_tokens += tokens.size
        while self._buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def take_tail(self, n: int) -> np.ndarray:
        """Remove and return the last ``n`` tokens, while they are all still unwritten."""
        if self.files or n > self._buffered:
            raise ValueError("the tail has been written already")
        stream = np.concatenate(self._buf)
        self._buf, self._buffered, self.n_tokens = [stream[:-n]], stream.size - n, self.n_tokens - n
        return stream[-n:]

    def close(self) -> None:
        if self._buffered:
            self._flush(self._buffered)

    def _flush(self, n: int) -> None:
        data = np.concatenate(self._buf)
        name = f"{self.split}-{len(self.files):06d}.bin"
        tmp = self.out / (name + ".tmp")
        data[:n].tofile(tmp)
        os.replace(tmp, self.out / name)
        self.files.append(name)
        rest = data[n:]
        self._buf = [rest] if rest.size else []
        self._buffered = rest.size


def build_text(sources: list[str], out: str | Path, *, column: str = "text", val_fraction: float = 0.01,
               block: int = 1025, shard_tokens: int = 100_000_000, workers: int | None = None,
               max_docs: int | None = None, hf_split: str = "train", tokenizer: str | Path | None = None,
               progress: bool = True) -> dict:
    """Tokenise ``sources`` into ``out`` with GPT-2 BPE, or the ``tokenizer.json`` in directory ``tokenizer``;
    returns the meta dict (also written as ``out/meta.json``)."""
    if not sources:
        raise DataError("no sources given")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction} must be in [0, 1)")
    if shard_tokens < block:
        raise DataError(f"shard_tokens={shard_tokens}: a shard must hold at least one block ({block} tokens)")
    if block < 2:
        raise DataError(f"block={block}: a block needs at least 2 tokens (an input and its target)")
    if tokenizer is not None and not (Path(tokenizer) / "tokenizer.json").is_file():
        raise DataError(f"{tokenizer}: no tokenizer.json there (make one with `moex data text tokenizer`)")
    tok = load_tokenizer(tokenizer)
    _use_tokenizer(None if tokenizer is None else str(tokenizer))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    every = round(1 / val_fraction) if val_fraction > 0 else 0
    writers = {s: ShardWriter(out, s, shard_tokens) for s in ("train", "val")}

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    n_docs = 0
    documents = read_sources(sources, column, hf_split, max_docs)
    init = dict(initializer=_use_tokenizer, initargs=(None if tokenizer is None else str(tokenizer),))
    with progress_bar(desc="tokenising", unit=" docs", disable=not progress) as bar, \
            Pool(workers, **init) if workers > 1 else nullcontext() as pool:  # the bar ends its line on an error
        tokenized = pool.imap(_tokenize, documents, chunksize=16) if pool else map(_tokenize, documents)
        for i, tokens in enumerate(tokenized):
            split = "val" if every and i % every == every - 1 else "train"
            writers[split].add(tokens)
            n_docs += 1
            bar.update()
    train, val = writers["train"], writers["val"]
    if every and val.n_tokens == 0 and not train.files and train.n_tokens:
        # fewer documents than 1/val_fraction (e.g. one text file): hold out the stream's tail instead
        val.add(train.take_tail(min(train.n_tokens, max(block, int(train.n_tokens * val_fraction)))))
    for w in writers.values():
        w.close()
    if writers["train"].n_tokens < block:
        raise DataError(f"{', '.join(sources)}: only {writers['train'].n_tokens} training tokens, "
                        f"fewer than one block of {block}")
    if val_fraction > 0 and writers["val"].n_tokens < block:
        raise DataError(f"{', '.join(sources)}: only {writers['val'].n_tokens} validation tokens "
                        f"(fewer than one block of {block}); raise --val-fraction or add text")
    meta = {
        "kind": "text",
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "dtype": "uint16",
        "block": block,
        "stream": True,
        "files": {s: w.files for s, w in writers.items()},
        "n_tokens": {s: w.n_tokens for s, w in writers.items()},
        "n_docs": n_docs,
        "sources": sources,
        "column": column,
        "val_fraction": val_fraction,
    }
    tok.save(out)
    write_json(out / "meta.json", meta)
    return meta


def build_tokenizer(sources: list[str], out: str | Path, vocab_size: int = 4096, *, column: str = "text",
                    hf_split: str = "train", max_docs: int | None = None) -> TextTokenizer:
    """Learn a byte-level BPE of ``vocab_size`` entries on ``sources`` and write ``out/tokenizer.json``."""
    if not sources:
        raise DataError("no sources given")

    tok = train_bpe((doc.text for doc in read_sources(sources, column, hf_split, max_docs)), vocab_size)
    Path(out).mkdir(parents=True, exist_ok=True)
    tok.save(out)
    return tok
