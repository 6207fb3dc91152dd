"""Linear board probes (Karvonen's chess_llm_interpretability; METHODS sec 10).

Inputs: the residual stream after each block at the evaluation positions (every ``.`` in the first 256
characters, at most 20 per game: the board before White's move, as for the BSP metrics), standardised
with the train games' mean and standard deviation.
- ``state``: for each of the 64 squares a multinomial logistic regression to its 13-class state
  (empty, 6 white, 6 black pieces); accuracy = share of (test position, square) pairs whose argmax class
  is right. Baseline: each square's most common class on the train games.
- ``pieces``: for each of the 768 piece BSPs a binary logistic regression; accuracy and the mean F1 over
  the BSPs that occur in the test games. Baseline: each BSP's majority value (F1 0 where that is "absent").
Two baselines per probe, both fitted on the train games: ``baseline`` (each square's most common class,
each BSP's majority value) and ``move_baseline`` (the same, given the move number: what a model that
only counts moves could probe; an untrained model's positional embeddings give it about this much).
All probes of a layer are one linear map (d -> 64 x 13, or d -> 768) fitted at once by full-batch L-BFGS on
the cross-entropy summed over the probes and averaged over positions, plus ``l2`` times the squared weights
(so each probe is regularised as if it were fitted alone); the first ``train_fraction`` of the games fit
the probes, the rest test them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from ..progress import progress_bar

from ..data.chess.labels import BoardLabels, board_labels, eval_positions
from ..data.chess.vocab import encode
from ..model.gpt import GPT
from .chess_eval import train_mask_for

N_CLASSES = 13


@torch.no_grad()
def residuals_at_positions(model: GPT, games: list[str], max_chars: int = 256, batch: int = 32,
                           device: str | torch.device = "cpu") -> Tensor:
    """(n_layer, P, d) float32: the residual stream after each block at every evaluation position."""
    n = min(max_chars, model.cfg.ctx)
    model = model.to(device).eval()
    out: list[list[Tensor]] = [[] for _ in range(model.cfg.n_layer)]
    for start in range(0, len(games), batch):
        chunk = games[start:start + batch]
        ids = [encode(g[:n], where=f"game {start + i + 1}") for i, g in enumerate(chunk)]
        idx = torch.zeros(len(ids), max(len(x) for x in ids), dtype=torch.long)
        for i, x in enumerate(ids):
            idx[i, :len(x)] = torch.as_tensor(x, dtype=torch.long)
        rows = torch.tensor([i for i, g in enumerate(chunk) for _ in eval_positions(g, n)], dtype=torch.long)
        cols = torch.tensor([p for g in chunk for p in eval_positions(g, n)], dtype=torch.long)
        x = model.embed(idx.to(device))
        for layer, block in enumerate(model.h):
            x, _ = block(x)
            out[layer].append(x[rows.to(device), cols.to(device)].float().cpu())
    return torch.stack([torch.cat(o) for o in out])


def fit_linear(x: Tensor, loss_of: Any, n_out: int, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """(W, b) minimising ``loss_of(x @ W + b) + l2 * |W|^2`` by full-batch L-BFGS."""
    w = torch.zeros(x.shape[1], n_out, requires_grad=True)
    b = torch.zeros(n_out, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_of(x @ w + b) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def probe_layer(x_train: Tensor, x_test: Tensor, labels_train: BoardLabels, labels_test: BoardLabels,
                l2: float = 1e-4, max_iter: int = 50) -> dict[str, float]:
    """Test accuracy of the 13-class square probes and of the 768 piece-BSP probes on one layer."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    state_tr = torch.as_tensor(labels_train.state.reshape(-1, 64), dtype=torch.long)
    state_te = torch.as_tensor(labels_test.state.reshape(-1, 64), dtype=torch.long)
    n = len(xtr)  # losses summed over squares / BSPs: each probe is regularised as if fitted alone
    w, b = fit_linear(xtr, lambda z: F.cross_entropy(z.view(-1, 64, N_CLASSES).transpose(1, 2), state_tr,
                                                     reduction="sum") / n, 64 * N_CLASSES, l2, max_iter)
    pred = (xte @ w + b).view(-1, 64, N_CLASSES).argmax(-1)
    pieces_tr = torch.as_tensor(labels_train.bsp(), dtype=torch.float32)
    pieces_te = torch.as_tensor(labels_test.bsp())
    wp, bp = fit_linear(xtr, lambda z: F.binary_cross_entropy_with_logits(z, pieces_tr, reduction="sum") / n,
                        768, l2, max_iter)
    on = (xte @ wp + bp) > 0
    return {"state_accuracy": (pred == state_te).float().mean().item(),
            "pieces_accuracy": (on == pieces_te).float().mean().item(),
            "pieces_f1": mean_f1(on, pieces_te)}


def mean_f1(pred: Tensor, true: Tensor) -> float:
    """Mean over the BSPs true at least once of F1(pred column, true column)."""
    tp = (pred & true).sum(0).float()
    n_pred, n_true = pred.sum(0).float(), true.sum(0).float()
    f1 = 2 * tp / (n_pred + n_true).clamp(min=1)
    present = n_true > 0
    return f1[present].mean().item() if present.any() else 0.0


def move_index(labels: BoardLabels) -> np.ndarray:
    """(P,) 0 for a game's first evaluation position, 1 for its second, ...: the move number - 1."""
    first = np.searchsorted(labels.game, labels.game)  # positions are in game order
    return np.arange(len(labels.game)) - first


def baseline(labels_train: BoardLabels, labels_test: BoardLabels, by_move: bool = False) -> dict[str, float]:
    """The trivial probes fitted on the train games: each square's most common class and each BSP's majority
    value, per move number when ``by_move`` (a move number unseen in training falls back to all moves)."""
    state_tr = torch.as_tensor(labels_train.state.reshape(-1, 64), dtype=torch.long)
    state_te = torch.as_tensor(labels_test.state.reshape(-1, 64), dtype=torch.long)
    pieces_tr, pieces_te = torch.as_tensor(labels_train.bsp()), torch.as_tensor(labels_test.bsp())
    group_tr = move_index(labels_train) if by_move else np.zeros(len(labels_train.game), dtype=np.int64)
    group_te = move_index(labels_test) if by_move else np.zeros(len(labels_test.game), dtype=np.int64)

    def fit(rows: np.ndarray) -> tuple[Tensor, Tensor]:
        counts = F.one_hot(state_tr[torch.as_tensor(rows)], N_CLASSES).sum(0)  # (64, 13)
        return counts.argmax(-1), pieces_tr[torch.as_tensor(rows)].float().mean(0) > 0.5

    overall = fit(np.ones(len(group_tr), dtype=bool))
    fitted = {int(g): fit(group_tr == g) for g in np.unique(group_tr)}
    state_pred = torch.stack([fitted.get(int(g), overall)[0] for g in group_te]) if len(group_te) else state_te
    pieces_pred = torch.stack([fitted.get(int(g), overall)[1] for g in group_te]) if len(group_te) else pieces_te
    return {"state_accuracy": (state_te == state_pred).float().mean().item(),
            "pieces_accuracy": (pieces_pred == pieces_te).float().mean().item(),
            "pieces_f1": mean_f1(pieces_pred, pieces_te)}


def subset(labels: BoardLabels, mask: np.ndarray) -> BoardLabels:
    return BoardLabels(labels.game[mask], labels.char[mask], labels.pieces[mask], labels.state[mask])


def board_probes(model: GPT, games: list[str], train_fraction: float = 0.5, layers: list[int] | None = None,
                 l2: float = 1e-4, max_iter: int = 50, device: str | torch.device = "cpu",
                 progress: bool = False) -> dict[str, Any]:
    """Linear probes of the board from the residual stream after each block (``layers``: default all):
    test accuracy per layer, the two baselines and the best layer (by the state probes' accuracy)."""
    max_chars = min(256, model.cfg.ctx)
    labels = board_labels(games, max_chars)
    train = train_mask_for(labels.game, len(games), train_fraction)
    resid = residuals_at_positions(model, games, max_chars, device=device)
    lab_tr, lab_te = subset(labels, train), subset(labels, ~train)
    wanted = range(model.cfg.n_layer) if layers is None else layers
    per_layer = {}
    for layer in progress_bar(wanted, desc="board probes", unit="layer", disable=not progress):
        if not 0 <= layer < model.cfg.n_layer:
            raise ValueError(f"layer {layer} out of range: the model has layers 0..{model.cfg.n_layer - 1}")
        x = resid[layer]
        per_layer[layer] = probe_layer(x[torch.as_tensor(train)], x[torch.as_tensor(~train)], lab_tr, lab_te,
                                       l2, max_iter)
    best = max(per_layer, key=lambda k: per_layer[k]["state_accuracy"])
    return {"layers": {str(k): v for k, v in per_layer.items()}, "baseline": baseline(lab_tr, lab_te),
            "move_baseline": baseline(lab_tr, lab_te, by_move=True),
            "best_layer": best, "best_state_accuracy": per_layer[best]["state_accuracy"],
            "n_train_positions": int(train.sum()), "n_test_positions": int((~train).sum()),
            "n_games": len(games), "train_fraction": train_fraction, "l2": l2}
