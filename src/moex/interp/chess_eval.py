"""Scoring features on chess games: split games, label positions, compute coverage and reconstruction."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.chess.labels import board_labels
from ..errors import MoexError
from ..model.gpt import GPT
from .bsp import bsp_metrics, state_onehot
from .collect import collect_chess
from .sites import Site, site_for


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


def score_chess(model: GPT, games: list[str], layer: int | None = None, site: str | Site = "mlp",
                train_fraction: float = 0.5, device: str = "cpu") -> dict[str, Any]:
    """Coverage and reconstruction of a model's features at ``site`` (``mlp`` code, ``resid``, ``sae:DIR``
    or any ``Site``) of ``layer`` (default 3/4 depth) on chess games: the first ``train_fraction`` of the
    games label features, the rest are scored. Returns ``score_features``' dict plus the site, the layer
    and the mean l0 (non-zero features per character)."""
    s = site_for(model, site, layer)
    acts = collect_chess(model, games, site=s, device=device)
    res = score_features(games, acts.features, acts.f_max, train_fraction, device=device)
    res.update(layer=s.layer, site=s.name, mean_l0=acts.mean_l0, features=res["pieces"]["n_features"],
               alive=res["pieces"]["alive_features"])
    return res
