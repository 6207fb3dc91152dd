"""Reading built datasets: ``meta.json`` + memory-mapped ``train.bin`` / ``val.bin`` of fixed-size blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import MoexError


class DataError(MoexError):
    """A data directory that cannot be used."""


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
        self.splits: dict[str, np.ndarray] = {}
        for split in ("train", "val"):
            path = self.dir / f"{split}.bin"
            if not path.exists():
                raise DataError(f"{path} not found (listed in {meta_path})")
            arr = np.memmap(path, dtype=dtype, mode="r")
            if arr.size % self.block:
                raise DataError(f"{path}: size {arr.size} is not a multiple of the block {self.block}")
            self.splits[split] = arr.reshape(-1, self.block)

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
