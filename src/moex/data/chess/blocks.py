"""Training blocks: uint8 memory-mapped ``train.bin`` / ``val.bin`` + ``meta.json``.

Packing (our documented choice; METHODS sec 3 fixes only "each block starts with ``;``"): games are
shuffled with the seed and split into train/val by game (no game is in both); each block starts at a
game's ``;`` and takes whole games while they fit; the game that does not fit fills the block to its end
(its tail is dropped: the next block starts at the next game's ``;``). A game longer than a block is
cut to one block. The model reads ``block[:-1]`` and predicts ``block[1:]`` (context block - 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...artifacts import atomic_write, write_json
from ...errors import MoexError
from .importer import read_games
from .vocab import CHARS, encode


def pack_blocks(games: list[str], block: int) -> np.ndarray:
    """Games -> (n_blocks, block) uint8, each row starting with ``;``. A final partial block is dropped."""
    return pack_ids([encode(t, where=f"game {g + 1}") for g, t in enumerate(games)], block)


def pack_ids(games: list[np.ndarray], block: int) -> np.ndarray:
    """``pack_blocks`` of games already encoded."""
    rows: list[np.ndarray] = []
    cur: list[np.ndarray] = []
    used = 0
    for ids in games:
        if used + len(ids) <= block:
            cur.append(ids)
            used += len(ids)
        elif used > 0:  # the overflowing game fills the block; its tail is dropped
            cur.append(ids[: block - used])
            used = block
        else:  # a game longer than a block: its first block only
            cur, used = [ids[:block]], block
        if used == block:
            rows.append(np.concatenate(cur))
            cur, used = [], 0
    return np.stack(rows) if rows else np.zeros((0, block), dtype=np.uint8)


def build_blocks(
    game_files: list[str | Path], out_dir: str | Path, val_fraction: float = 0.01, block: int = 1024,
    seed: int = 2357,
) -> dict:
    """Write ``train.bin``, ``val.bin`` and ``meta.json`` into ``out_dir``; return the meta dict."""
    if block < 2:
        raise MoexError(f"block={block} must be at least 2 characters")
    if not 0 <= val_fraction < 1:
        raise MoexError(f"val_fraction={val_fraction} must be in [0, 1)")
    games: list[np.ndarray] = []  # encoded before the shuffle, while a game's number means something
    for f in game_files:
        games += [encode(g, where=f"{f}: game {i + 1}") for i, g in enumerate(read_games(f))]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(games))
    n_val = max(1, int(round(len(games) * val_fraction))) if val_fraction > 0 else 0
    if n_val >= len(games):
        raise MoexError(f"val_fraction={val_fraction} leaves no training games ({len(games)} games)")
    val_games = [games[i] for i in order[:n_val]]
    train_games = [games[i] for i in order[n_val:]]
    out_dir = Path(out_dir)
    counts = {}
    for split, gs in (("train", train_games), ("val", val_games)):
        blocks = pack_ids(gs, block)
        if len(blocks) == 0:
            raise MoexError(f"the {split} split ({len(gs)} games) fills no block of {block} characters")
        atomic_write(out_dir / f"{split}.bin", lambda p, b=blocks: b.tofile(p))
        counts[split] = {"games": len(gs), "blocks": int(len(blocks)), "chars": int(blocks.size)}
    meta = {
        "kind": "chess",
        "vocab": CHARS,
        "vocab_size": len(CHARS),
        "block": block,
        "dtype": "uint8",
        "seed": seed,
        "val_fraction": val_fraction,
        "sources": [str(f) for f in game_files],
        "splits": counts,
    }
    write_json(out_dir / "meta.json", meta)
    return meta
