"""Reading built datasets: ``meta.json`` + memory-mapped ``train.bin`` / ``val.bin`` of fixed-size blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

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
        self.meta = json.loads(meta_path.read_text())
        self.block = int(self.meta["block"])
        self.vocab_size = int(self.meta["vocab_size"])
        dtype = np.dtype(self.meta["dtype"])
        # Chess: one file per split of whole blocks. Text ("stream": true): token shards, each cut into
        # consecutive blocks (a shard's last partial block is not used).
        stream = bool(self.meta.get("stream"))
        files = self.meta.get("files", {"train": ["train.bin"], "val": ["val.bin"]})
        self.splits: dict[str, np.ndarray] = {}
        for split in ("train", "val"):
            parts = []
            for name in files.get(split, []):
                path = self.dir / name
                if not path.exists():
                    raise DataError(f"{path} not found (listed in {meta_path})")
                arr = np.memmap(path, dtype=dtype, mode="r")
                if arr.size % self.block and not stream:
                    raise DataError(f"{path}: size {arr.size} is not a multiple of the block {self.block}")
                parts.append(arr[: arr.size - arr.size % self.block].reshape(-1, self.block))
            parts = [p for p in parts if len(p)]
            if not parts:
                raise DataError(f"{self.dir}: no {split} block of {self.block} tokens")
            self.splits[split] = parts[0] if len(parts) == 1 else ShardedBlocks(parts)

    def n_blocks(self, split: str) -> int:
        return self.splits[split].shape[0]

    def blocks(self, split: str, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks at ``index`` -> (x, y) int64 tensors of shape (len(index), block - 1)."""
        b = torch.from_numpy(np.asarray(self.splits[split][np.sort(index)], dtype=np.int64))
        return b[:, :-1], b[:, 1:]

    def sample(self, split: str, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of whole blocks (each starts at a block boundary)."""
        idx = torch.randint(self.n_blocks(split), (batch,), generator=gen).numpy()
        b = torch.from_numpy(np.asarray(self.splits[split][idx], dtype=np.int64))
        return b[:, :-1], b[:, 1:]
