"""Board-state labels at the evaluation positions (METHODS sec 4).

Positions: every ``.`` in the first ``max_chars`` characters of a transcript, at most ``max_positions``
per game. The label at the ``.`` of move number k is the board before White's k-th move, i.e. after
2(k-1) plies (the ``.`` of ``1.`` is the initial board).

Encodings (square i -> row i // 8, column i % 8, a1 = 0):
- ``pieces``: (P, 12, 8, 8) bool, plane = colour * 6 + piece_type - 1 (white P N B R Q K, then black):
  the 768 piece BSPs (empty squares excluded).
- ``state``: (P, 8, 8) int8 13-class state, 6 + piece_type for white, 6 - piece_type for black, 6 empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import chess
import numpy as np

from ...config import ConfigError
from .transcript import TranscriptError, replay

PLANE_NAMES = [f"{c}{p}" for c in ("w", "b") for p in "PNBRQK"]
_BITS = np.arange(64, dtype=np.uint64)


@dataclass
class BoardLabels:
    game: np.ndarray  # (P,) game index
    char: np.ndarray  # (P,) character index of the '.' in the transcript
    pieces: np.ndarray  # (P, 12, 8, 8) bool
    state: np.ndarray  # (P, 8, 8) int8

    def bsp(self) -> np.ndarray:
        """(P, 768) bool: the piece BSPs flattened as plane * 64 + square."""
        return self.pieces.reshape(len(self.game), 768)

    def save(self, path: str) -> None:
        np.savez_compressed(path, game=self.game, char=self.char, pieces=self.pieces, state=self.state)

    @classmethod
    def load(cls, path: str) -> "BoardLabels":
        z = np.load(path)
        return cls(z["game"], z["char"], z["pieces"], z["state"])


def eval_positions(transcript: str, max_chars: int = 256, max_positions: int = 20) -> list[int]:
    """Character indices of the evaluation positions of one transcript."""
    return [i for i, c in enumerate(transcript[:max_chars]) if c == "."][:max_positions]


def board_planes(board: chess.Board) -> np.ndarray:
    """(12, 64) bool piece presence from the board's bitboards."""
    masks = np.array(
        [int(board.pieces_mask(pt, color)) for color in (chess.WHITE, chess.BLACK) for pt in range(1, 7)],
        dtype=np.uint64,
    )
    return ((masks[:, None] >> _BITS[None, :]) & np.uint64(1)).astype(bool)


def planes_to_state(planes: np.ndarray) -> np.ndarray:
    """(..., 12, 64) bool -> (..., 64) int8 13-class state."""
    values = np.array([6 + t for t in range(1, 7)] + [6 - t for t in range(1, 7)], dtype=np.int8)
    state = np.full(planes.shape[:-2] + (64,), 6, dtype=np.int8)
    for plane in range(12):
        state[planes[..., plane, :]] = values[plane]
    return state


def game_boards(transcript: str, n_positions: int, where: str) -> np.ndarray:
    """(n_positions, 12, 64): the boards after 0, 2, 4, ... plies."""
    out = np.zeros((n_positions, 12, 64), dtype=bool)
    out[0] = board_planes(chess.Board())
    k = 1
    for ply, board in enumerate(replay(transcript, where), 1):
        if k == n_positions:
            break
        if ply % 2 == 0:
            out[k] = board_planes(board)
            k += 1
    if k < n_positions:
        raise TranscriptError(f"{where}: transcript ends before move {k + 1}")
    return out


def board_labels(games: list[str], max_chars: int = 256, max_positions: int = 20) -> BoardLabels:
    """Labels for every evaluation position of every game, in game order then position order."""
    if max_chars < 2 or max_positions < 1:
        raise ConfigError(f"max_chars={max_chars}, max_positions={max_positions}: need max_chars >= 2 and "
                         "max_positions >= 1")
    game_idx, chars, boards = [], [], []
    for g, t in enumerate(games):
        pos = eval_positions(t, max_chars, max_positions)
        if not pos:
            continue
        boards.append(game_boards(t, len(pos), where=f"game {g + 1}"))
        game_idx.extend([g] * len(pos))
        chars.extend(pos)
    planes = np.concatenate(boards) if boards else np.zeros((0, 12, 64), dtype=bool)
    return BoardLabels(
        game=np.asarray(game_idx, dtype=np.int64),
        char=np.asarray(chars, dtype=np.int64),
        pieces=planes.reshape(-1, 12, 8, 8),
        state=planes_to_state(planes).reshape(-1, 8, 8),
    )
