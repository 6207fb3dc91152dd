"""Features of a site over chess games: at every character (f_max, l0) and at the BSP evaluation positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.chess.labels import eval_positions
from ..data.chess.vocab import encode
from ..model.gpt import GPT
from .sites import Site, collect, site_for


@dataclass
class ChessActivations:
    features: np.ndarray  # (P, n) at the evaluation positions, game order then position order
    f_max: np.ndarray  # (n,) max over every character of the games' prefixes
    mean_l0: float  # mean number of non-zero features per character


@torch.no_grad()
def collect_chess(
    model: GPT, games: list[str], layer: int | None = None, site: str | Site = "mlp", max_chars: int = 256,
    max_positions: int = 20, batch: int = 32, device: str | torch.device = "cpu", fmax_games: int | None = None,
) -> ChessActivations:
    """Features of ``site`` (``mlp``, ``resid``, ``sae:DIR`` or any ``Site``) on the first ``max_chars``
    characters of each game (at most the model's context). f_max is taken over every character of the
    first ``fmax_games`` games (all games when None)."""
    s = site_for(model, site, layer)
    n = min(max_chars, model.cfg.ctx)
    ids = [encode(g[:n], where=f"game {i + 1}") for i, g in enumerate(games)]
    feats, fmax, l0_sum, l0_count = [], None, 0.0, 0
    n_fmax = len(games) if fmax_games is None else fmax_games
    for chunk in collect(s, ids, batch=batch, device=device, length=n):
        a_valid = chunk.features[chunk.mask]
        rows = torch.arange(chunk.index, chunk.index + chunk.tokens.shape[0], device=chunk.mask.device)
        in_fmax = chunk.mask & (rows < n_fmax)[:, None]
        if in_fmax.any():
            m = chunk.features[in_fmax].max(dim=0).values
            fmax = m if fmax is None else torch.maximum(fmax, m)
        l0_sum += (a_valid != 0).sum().item()
        l0_count += a_valid.shape[0]
        for i in range(chunk.tokens.shape[0]):
            pos = eval_positions(games[chunk.index + i], n, max_positions)
            feats.append(chunk.features[i, pos].cpu())
    if fmax is None:
        raise ValueError(f"fmax_games={fmax_games}: no game to take f_max over")
    return ChessActivations(torch.cat(feats).numpy(), fmax.cpu().numpy(), l0_sum / max(1, l0_count))
