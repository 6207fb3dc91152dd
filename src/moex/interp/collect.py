"""Activation collection over chess games: any layer's features at every character and at the BSP positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.chess.labels import eval_positions
from ..data.chess.vocab import encode
from ..model.gpt import GPT


@dataclass
class ChessActivations:
    features: np.ndarray  # (P, n) at the evaluation positions, game order then position order
    f_max: np.ndarray  # (n,) max over every character of the games' prefixes
    mean_l0: float  # mean number of non-zero features per character


def default_layer(model: GPT) -> int:
    """The paper's evaluated layer: 6 of 8 (0-based, Karvonen's model.transformer.h[6]); 3/4 depth in general."""
    return int(model.cfg.n_layer * 0.75)


@torch.no_grad()
def collect_chess(
    model: GPT, games: list[str], layer: int, site: str = "mlp", max_chars: int = 256, max_positions: int = 20,
    batch: int = 32, device: str | torch.device = "cpu", sae=None,
) -> ChessActivations:
    """Features of ``site`` ('mlp': the wide-sparse MLP code; 'resid': the residual stream after the block;
    with ``sae``: that SAE's latents of the residual stream)."""
    if site not in ("mlp", "resid"):
        raise ValueError(f"site={site!r} must be 'mlp' or 'resid'")
    if sae is not None:
        site = "resid"
        sae = sae.to(device).eval()
    model = model.to(device).eval()
    n = min(max_chars, model.cfg.ctx)
    feats, fmax, l0_sum, l0_count = [], None, 0.0, 0
    for lo in range(0, len(games), batch):
        chunk = games[lo:lo + batch]
        ids = np.zeros((len(chunk), n), dtype=np.int64)
        lengths = []
        for i, g in enumerate(chunk):
            e = encode(g[:n], where=f"game {lo + i}")
            ids[i, :len(e)] = e
            lengths.append(len(e))
        idx = torch.from_numpy(ids).to(device)
        if site == "mlp":
            acts = model.mlp_code(idx, layer, dense=True).float().reshape(len(chunk), n, -1)
        else:
            acts = model.residual(idx, layer).float()
            if sae is not None:
                acts = sae.encode(acts)
        valid = torch.arange(n, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
        a_valid = acts[valid]
        m = a_valid.max(dim=0).values
        fmax = m if fmax is None else torch.maximum(fmax, m)
        l0_sum += (a_valid != 0).sum().item()
        l0_count += a_valid.shape[0]
        for i, g in enumerate(chunk):
            pos = eval_positions(g, max_chars, max_positions)
            feats.append(acts[i, pos].cpu())
    return ChessActivations(torch.cat(feats).numpy(), fmax.cpu().numpy(), l0_sum / max(1, l0_count))
