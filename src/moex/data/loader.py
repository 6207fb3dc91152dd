"""Reading built datasets: ``meta.json`` + memory-mapped ``train.bin`` / ``val.bin`` of fixed-size blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..artifacts import read_json
from ..errors import MoexError


class DataError(MoexError):
    """A data directory that cannot be used."""


class ShardedBlocks:
    """Several memory-mapped (n_i, block) arrays indexed as one, without copying them."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), parts[0].shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        shard = np.searchsorted(self.starts, index, side="right") - 1
        return np.stack([self.parts[s][i - self.starts[s]] for s, i in zip(shard, index)])


class BlockData:
    """Fixed-size token blocks; a batch is ``batch`` whole blocks (x = block[:-1], y = block[1:])."""

    def __init__(self, data_dir: str | Path):
        self.dir = Path(data_dir)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{meta_path} not found: build the data first (moex data chess build ...)")
        self.meta = read_json(meta_path)
        try:
            self.block = int(self.meta["block"])
            self.vocab_size = int(self.meta["vocab_size"])
            dtype = np.dtype(self.meta["dtype"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{meta_path}: missing or bad key {e}") from None
        # Chess: one file per split of whole blocks. Text ("stream": true): token shards, each cut into
        # consecutive blocks (a shard's last partial block is not used). A file shorter than meta.json
        # records (a copy or download cut short) is refused, naming the file.
        stream = bool(self.meta.get("stream"))
        files = self.meta.get("files", {"train": ["train.bin"], "val": ["val.bin"]})
        self.splits: dict[str, np.ndarray] = {}
        for split in ("train", "val"):
            parts, tokens = [], 0
            for name in files.get(split, []):
                path = self.dir / name
                if not path.exists():
                    raise DataError(f"{path} not found (listed in {meta_path})")
                if path.stat().st_size % dtype.itemsize:
                    raise DataError(f"{path}: {path.stat().st_size} bytes is not a whole number of {dtype} "
                                    "tokens: the file is truncated")
                arr = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)
                if arr.size % self.block and not stream:
                    raise DataError(f"{path}: size {arr.size} is not a multiple of the block {self.block} "
                                    "(truncated?)")
                tokens += arr.size
                parts.append(arr[: arr.size - arr.size % self.block].reshape(-1, self.block))
            self._check_size(meta_path, split, files.get(split, []), tokens, stream)
            parts = [p for p in parts if len(p)]
            if not parts:
                raise DataError(f"{self.dir}: no {split} block of {self.block} tokens")
            self.splits[split] = parts[0] if len(parts) == 1 else ShardedBlocks(parts)

    def _check_size(self, meta_path: Path, split: str, names: list[str], tokens: int, stream: bool) -> None:
        if stream:
            expected = self.meta.get("n_tokens", {}).get(split)
        else:
            blocks = self.meta.get("splits", {}).get(split, {}).get("blocks")
            expected = None if blocks is None else blocks * self.block
        if expected is not None and tokens != expected:
            raise DataError(f"{self.dir / names[-1] if names else self.dir}: the {split} split holds {tokens} "
                            f"tokens but {meta_path} records {expected}: a file is truncated or was replaced")

    def n_blocks(self, split: str) -> int:
        return self.splits[split].shape[0]

    def blocks(self, split: str, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks at ``index`` -> (x, y) int64 tensors of shape (len(index), block - 1)."""
        b = torch.from_numpy(np.asarray(self.splits[split][np.sort(index)], dtype=np.int64))
        return b[:, :-1], b[:, 1:]

    def iter_blocks(self, split: str) -> Iterator[list[int]]:
        """Every block of ``split`` in order, as token lists (read one at a time)."""
        for i in range(self.n_blocks(split)):
            yield np.asarray(self.splits[split][[i]]).reshape(-1).tolist()

    def sample(self, split: str, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of whole blocks (each starts at a block boundary)."""
        idx = torch.randint(self.n_blocks(split), (batch,), generator=gen).numpy()
        b = torch.from_numpy(np.asarray(self.splits[split][idx], dtype=np.int64))
        return b[:, :-1], b[:, 1:]
