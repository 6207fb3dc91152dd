"""Scoring features on chess games: split games, label positions, compute coverage and reconstruction."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.chess.labels import BoardLabels, board_labels
from ..errors import MoexError
from ..model.gpt import GPT
from ..training.evaluators import register_evaluator
from .bsp import bsp_metrics, state_onehot
from .collect import collect_chess
from .sites import Site, site_for

DEFINITIONS = {
    "coverage": "primary; Karvonen's code: one threshold shared by all BSPs (max over t of the mean over BSPs "
                "of the best feature F1)",
    "reconstruction": "primary; Karvonen's code: TP/FP/FN of the high-precision features' predictions pooled "
                      "over all test boards x BSPs, best shared threshold",
    "coverage_per_bsp": "MoE-X appendix B.2 as written: the best threshold per BSP (mean over BSPs of the max "
                        "over t and features of F1)",
    "reconstruction_per_board": "MoE-X appendix B.3 as written: F1 of each test board's predicted BSP set, "
                                "averaged over boards, best threshold",
    "f_max": "max activation over every character of the train games (fmax_split='train'), or of all games "
             "(fmax_split='all')",
}


def train_mask_for(games_of_positions: np.ndarray, n_games: int, train_fraction: float) -> np.ndarray:
    """The first ``train_fraction`` of the games (file order) label features; the rest are test games."""
    n_train = int(round(n_games * train_fraction))
    if not 0 < n_train < n_games:
        raise MoexError(f"train_fraction={train_fraction} of {n_games} games leaves no train or no test games")
    return games_of_positions < n_train


def score_features(
    games: list[str], features: np.ndarray, f_max: np.ndarray | None = None, train_fraction: float = 0.5,
    device: str = "cpu", max_chars: int = 256, labels: BoardLabels | None = None,
) -> dict[str, Any]:
    """Coverage/reconstruction of ``features`` (one row per evaluation position in the first ``max_chars``
    characters) for the piece BSPs (768) and the 13-class piece state (832); ``labels``: the games'
    ``board_labels`` when the caller has them already."""
    labels = board_labels(games, max_chars) if labels is None else labels
    if features.shape[0] != len(labels.game):
        raise MoexError(
            f"features have {features.shape[0]} rows but the games have {len(labels.game)} evaluation "
            f"positions (every '.' in the first {max_chars} characters, at most 20 per game)")
    mask = train_mask_for(labels.game, len(games), train_fraction)
    out: dict[str, Any] = {"n_games": len(games), "n_positions": int(len(labels.game)),
                           "train_fraction": train_fraction}
    for name, lab in (("pieces", labels.bsp()), ("piece_state", state_onehot(labels.state))):
        out[name] = bsp_metrics(features, lab, mask, f_max=f_max, device=device).to_dict()
    for key in ("coverage", "reconstruction", "coverage_per_bsp", "reconstruction_per_board"):
        out[key] = out["pieces"][key]
    out["definitions"] = DEFINITIONS
    return out


def score_chess(model: GPT, games: list[str], layer: int | None = None, site: str | Site = "mlp",
                train_fraction: float = 0.5, device: str = "cpu", fmax_split: str = "train") -> dict[str, Any]:
    """Coverage and reconstruction of a model's features at ``site`` (``mlp`` code, ``resid``, ``sae:DIR``
    or any ``Site``) of ``layer`` (default 3/4 depth) on chess games: the first ``train_fraction`` of the
    games label features, the rest are scored; f_max over the train games (``fmax_split="all"``: all).
    Returns ``score_features``' dict plus the site, the layer and the mean l0 (non-zero features per
    character)."""
    if fmax_split not in ("train", "all"):
        raise MoexError(f"fmax_split={fmax_split!r} must be 'train' or 'all'")
    s = site_for(model, site, layer)
    n_train = int(round(len(games) * train_fraction)) if fmax_split == "train" else None
    acts = collect_chess(model, games, site=s, device=device, fmax_games=n_train)
    res = score_features(games, acts.features, acts.f_max, train_fraction, device=device,
                         max_chars=min(256, model.cfg.ctx))
    res.update(layer=s.layer, site=s.name, mean_l0=acts.mean_l0, features=res["pieces"]["n_features"],
               alive=res["pieces"]["alive_features"], fmax_split=fmax_split)
    return res


class ChessEvaluator:
    """BSP coverage and reconstruction (both definitions) of the MLP code at one layer on a fixed set of
    held-out games: the training-time evaluation ``eval_chess_every`` asks for."""

    columns = ("chess_coverage", "chess_reconstruction", "chess_coverage_per_bsp", "chess_reconstruction_per_board",
               "chess_mean_l0")

    def __init__(self, games: list[str], every: int, layer: int | None = None, device: str = "cpu"):
        self.games, self.every, self.layer, self.device = games, every, layer, device

    def __call__(self, model: GPT) -> dict[str, float]:
        r = score_chess(model, self.games, self.layer, device=self.device)
        return {f"chess_{k}": round(float(r[k]), 6) for k in
                ("coverage", "reconstruction", "coverage_per_bsp", "reconstruction_per_board", "mean_l0")}


def chess_evaluator(tcfg: Any, device: Any) -> ChessEvaluator:
    from ..data.chess.importer import read_games

    games = read_games(tcfg.eval_chess_games)[: tcfg.eval_chess_n_games]
    if len(games) < 2:
        raise MoexError(f"{tcfg.eval_chess_games}: eval_chess_every needs at least 2 games, found {len(games)}")
    return ChessEvaluator(games, tcfg.eval_chess_every, None if tcfg.eval_chess_layer < 0 else tcfg.eval_chess_layer,
                          str(device))


register_evaluator("chess", chess_evaluator)
