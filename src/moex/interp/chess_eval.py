"""Scoring features on chess games: split games, label positions, compute coverage and reconstruction."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MoexError
from ..data.chess.labels import board_labels
from .bsp import bsp_metrics, state_onehot


def train_mask_for(games_of_positions: np.ndarray, n_games: int, train_fraction: float) -> np.ndarray:
    """The first ``train_fraction`` of the games (file order) label features; the rest are test games."""
    n_train = int(round(n_games * train_fraction))
    if not 0 < n_train < n_games:
        raise MoexError(f"train_fraction={train_fraction} of {n_games} games leaves no train or no test games")
    return games_of_positions < n_train


def score_features(
    games: list[str], features: np.ndarray, f_max: np.ndarray | None = None, train_fraction: float = 0.5,
    device: str = "cpu",
) -> dict[str, Any]:
    """Coverage/reconstruction of ``features`` (one row per evaluation position) for the piece BSPs
    (768) and the 13-class piece state (832)."""
    labels = board_labels(games)
    if features.shape[0] != len(labels.game):
        raise MoexError(
            f"features have {features.shape[0]} rows but the games have {len(labels.game)} evaluation "
            "positions (every '.' in the first 256 characters, at most 20 per game)")
    mask = train_mask_for(labels.game, len(games), train_fraction)
    out: dict[str, Any] = {"n_games": len(games), "n_positions": int(len(labels.game)),
                           "train_fraction": train_fraction}
    for name, lab in (("pieces", labels.bsp()), ("piece_state", state_onehot(labels.state))):
        out[name] = bsp_metrics(features, lab, mask, f_max=f_max, device=device).to_dict()
    out["coverage"] = out["pieces"]["coverage"]
    out["reconstruction"] = out["pieces"]["reconstruction"]
    return out
