"""Board-state-property metrics: coverage and board reconstruction (Karvonen et al. 2024; METHODS sec 4).

Given features F (positions x features), binary BSP labels B (positions x BSPs) and f_max per feature:
feature f is "on" at threshold t iff F > t * f_max(f), t in {0.0, 0.1, ..., 1.0}.
- Coverage (train positions): for each t, mean over BSPs of the best F1 over features; the best t.
- Reconstruction: f is a high-precision classifier of g at t if TP / #on >= 0.95 and TP >= 10 on the
  train positions; on the test positions g is predicted true iff any of its high-precision features
  is on; TP/FP/FN summed over all positions x BSPs give one F1 per t; the best t is reported
  (our explicit choice: one threshold for all BSPs, chosen on the test F1 as in the paper's table).
These two are what Karvonen's code computes (the primary numbers). Computed in the same pass, the
definitions as the MoE-X paper's appendix writes them:
- ``coverage_per_bsp`` (B.2): mean over BSPs of the max over t and features of F1 (a threshold per BSP);
- ``reconstruction_per_board`` (B.3): the F1 of each test board's predicted BSP set against its true
  set (0 when nothing is predicted), averaged over boards; the best t is reported.
Unlike Karvonen's reconstruction code, which counts firing high-precision features in int8 and wraps
past 127 for one square, the prediction here is a boolean any(): it cannot overflow.
Vectorised torch, chunked over features so memory stays O(positions x chunk). ``features`` may be an array
or any object with ``shape`` and ``columns(lo, hi) -> (P, hi - lo) array`` (e.g. a store on disk), so the
whole (positions x features) matrix need never be in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11))
EPS = 1e-8


def column_block(features: Any, lo: int, hi: int) -> torch.Tensor:
    """Columns ``lo:hi`` of ``features`` (an array or tensor, or a column store with ``columns(lo, hi)``)."""
    if hasattr(features, "columns"):
        return torch.from_numpy(np.ascontiguousarray(features.columns(lo, hi)))
    return torch.as_tensor(features)[:, lo:hi]


def column_max(features: Any, chunk: int = 1024) -> torch.Tensor:
    n = features.shape[1]
    return torch.cat([column_block(features, lo, min(n, lo + chunk)).float().max(dim=0).values
                      for lo in range(0, n, chunk)])


def block_width(n_positions: int, chunk: int, budget: int = 4_000_000) -> int:
    """Feature columns per block: ``chunk``, fewer when the positions are many (memory ~ positions x width)."""
    return max(1, min(chunk, budget // max(1, n_positions)))


@dataclass
class BSPResult:
    coverage: float
    coverage_threshold: float
    reconstruction: float
    reconstruction_threshold: float
    alive_features: int
    n_features: int
    coverage_by_threshold: list[float]
    reconstruction_by_threshold: list[float]
    best_f1_per_bsp: list[float]  # at the coverage threshold
    coverage_per_bsp: float = 0.0  # B.2 as written: a threshold per BSP
    reconstruction_per_board: float = 0.0  # B.3 as written: mean F1 over test boards
    reconstruction_per_board_threshold: float = 0.0
    reconstruction_per_board_by_threshold: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def f1(tp: torch.Tensor, n_on: torch.Tensor, n_true: torch.Tensor) -> torch.Tensor:
    precision = tp / (n_on + EPS)
    recall = tp / (n_true + EPS)
    return 2 * precision * recall / (precision + recall + EPS)


def bsp_metrics(
    features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, train_mask: torch.Tensor | np.ndarray,
    f_max: torch.Tensor | np.ndarray | None = None, thresholds: tuple[float, ...] = THRESHOLDS,
    chunk: int = 1024, device: str | torch.device = "cpu", min_precision: float = 0.95, min_tp: int = 10,
) -> BSPResult:
    """Coverage and reconstruction of ``features`` (P, n) for ``labels`` (P, G) bool.

    ``train_mask`` (P,) bool selects the positions that label features; the rest are the test positions.
    ``f_max`` defaults to the column max of ``features``.
    """
    shape = features.shape
    train = torch.as_tensor(train_mask, dtype=torch.bool).to(device)
    lab_bool = torch.as_tensor(labels).to(device)
    if shape[0] != lab_bool.shape[0] or train.shape[0] != lab_bool.shape[0]:
        raise ValueError(f"features ({shape[0]}), labels ({lab_bool.shape[0]}) and train mask "
                         f"({train.shape[0]}) must have one row per position")
    if not train.any() or train.all():
        raise ValueError("need both train and test positions")
    fmax = torch.as_tensor(f_max) if f_max is not None else column_max(features, chunk)
    fmax = fmax.to(device=device, dtype=torch.float32)
    n_feat, n_bsp, n_t = shape[1], lab_bool.shape[1], len(thresholds)
    lab_tr, lab_te = lab_bool[train].float(), lab_bool[~train].float()
    del lab_bool
    chunk = block_width(shape[0], chunk)
    true_tr, true_te = lab_tr.sum(0), lab_te.sum(0)

    best_f1 = torch.zeros(n_t, n_bsp, device=device)  # max over features, per t and BSP
    pred = torch.zeros(n_t, int((~train).sum()), n_bsp, dtype=torch.bool, device=device)  # any HP feature on
    for lo in range(0, n_feat, chunk):
        f = column_block(features, lo, min(n_feat, lo + chunk)).to(device=device, dtype=torch.float32)
        fm = fmax[lo:lo + chunk]
        f_tr, f_te = f[train], f[~train]
        del f
        for ti, t in enumerate(thresholds):
            on_tr = (f_tr > t * fm).float()
            tp = on_tr.T @ lab_tr  # (chunk, G)
            n_on = on_tr.sum(0)[:, None]
            best_f1[ti] = torch.maximum(best_f1[ti], f1(tp, n_on, true_tr[None, :]).max(dim=0).values)
            hp = ((tp / (n_on + EPS) >= min_precision) & (tp >= min_tp)).float()  # (chunk, G)
            if hp.any():
                pred[ti] |= ((f_te > t * fm).float() @ hp) > 0
    coverage_t = best_f1.mean(dim=1)
    rec_t, board_t = [], []
    true_board = lab_te.sum(1)  # true BSPs per test board
    for ti in range(n_t):
        hit = pred[ti] & (lab_te > 0)
        rec_t.append(f1(hit.sum().float(), pred[ti].sum().float(), true_te.sum()).item())
        board_t.append(f1(hit.sum(1).float(), pred[ti].sum(1).float(), true_board).mean().item())
    ci = int(coverage_t.argmax())
    ri = int(np.argmax(rec_t))
    bi = int(np.argmax(board_t))
    return BSPResult(
        coverage=coverage_t[ci].item(), coverage_threshold=thresholds[ci],
        reconstruction=rec_t[ri], reconstruction_threshold=thresholds[ri],
        alive_features=int((fmax > 0).sum()), n_features=n_feat,
        coverage_by_threshold=[round(v, 6) for v in coverage_t.tolist()],
        reconstruction_by_threshold=[round(v, 6) for v in rec_t],
        best_f1_per_bsp=[round(v, 6) for v in best_f1[ci].tolist()],
        coverage_per_bsp=best_f1.max(dim=0).values.mean().item(),
        reconstruction_per_board=board_t[bi], reconstruction_per_board_threshold=thresholds[bi],
        reconstruction_per_board_by_threshold=[round(v, 6) for v in board_t],
    )


def state_onehot(state: np.ndarray) -> np.ndarray:
    """(P, 8, 8) 13-class state -> (P, 13 * 64) bool, index class * 64 + square."""
    p = state.reshape(len(state), 64).astype(np.int64)
    out = np.zeros((len(state), 13, 64), dtype=bool)
    out[np.arange(len(state))[:, None], p, np.arange(64)[None, :]] = True
    return out.reshape(len(state), 13 * 64)


@dataclass
class FeatureBSPs:
    """Per feature, the BSPs it classifies best on the train positions: indices (n, top) into the labels'
    columns and, at each one's best threshold, F1, precision, recall, that threshold, the true positives, the
    positions where the feature is on, the BSP's base rate and ``lift``: F1 minus the F1 of the classifier
    that always says true (2b / (1 + b) for base rate b). A (feature, BSP) pair counts only with at least
    ``min_tp`` true positives; where fewer BSPs qualify, the rest have lift -inf."""

    bsp: np.ndarray  # (n, top) int
    f1: np.ndarray  # (n, top)
    precision: np.ndarray
    recall: np.ndarray
    threshold: np.ndarray
    tp: np.ndarray
    positives: np.ndarray
    base_rate: np.ndarray
    lift: np.ndarray


def best_bsps_per_feature(
    features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, train_mask: torch.Tensor | np.ndarray,
    f_max: torch.Tensor | np.ndarray, top: int = 5, thresholds: tuple[float, ...] = THRESHOLDS, chunk: int = 1024,
    device: str | torch.device = "cpu", min_tp: int = 10,
) -> FeatureBSPs:
    """For every feature, its ``top`` BSPs by lift (F1 above the always-true classifier's) on the train
    positions, each at its own best threshold by F1 among those with at least ``min_tp`` true positives
    (feature f on iff F > t * f_max(f), as in ``bsp_metrics``; ``min_tp`` as the reconstruction rule's)."""
    n_feat = features.shape[1]
    train = torch.as_tensor(train_mask, dtype=torch.bool)
    lab = torch.as_tensor(labels)[train].to(device=device, dtype=torch.float32)
    fmax = torch.as_tensor(f_max).to(device=device, dtype=torch.float32)
    chunk = block_width(features.shape[0], chunk)
    n_true = lab.sum(0)
    base = n_true / max(1, lab.shape[0])
    base_f1 = 2 * base / (1 + base)
    top = min(top, lab.shape[1])
    keys = ("bsp", "f1", "precision", "recall", "threshold", "tp", "positives", "base_rate", "lift")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for lo in range(0, n_feat, chunk):
        f = column_block(features, lo, min(n_feat, lo + chunk))[train].to(device=device, dtype=torch.float32)
        fm = fmax[lo:lo + chunk]
        best = torch.full((f.shape[1], lab.shape[1]), -1.0, device=device)
        best_tp, best_on, best_t = torch.zeros_like(best), torch.zeros_like(best), torch.zeros_like(best)
        for t in thresholds:
            on = (f > t * fm).float()
            tp, n_on = on.T @ lab, on.sum(0)[:, None].expand_as(best)
            score = torch.where(tp >= min_tp, f1(tp, n_on, n_true[None, :]), torch.full_like(best, -1.0))
            better = score > best
            best = torch.where(better, score, best)
            best_tp, best_on = torch.where(better, tp, best_tp), torch.where(better, n_on, best_on)
            best_t = torch.where(better, torch.full_like(best, t), best_t)
        lift = torch.where(best >= 0, best - base_f1[None, :], torch.full_like(best, -float("inf")))
        val, idx = lift.topk(top, dim=1)
        out["bsp"].append(idx)
        out["lift"].append(val)
        out["base_rate"].append(base[idx])
        for name, m in (("f1", best), ("threshold", best_t), ("tp", best_tp), ("positives", best_on)):
            out[name].append(m.gather(1, idx))
        out["precision"].append(out["tp"][-1] / (out["positives"][-1] + EPS))
        out["recall"].append(out["tp"][-1] / (n_true[idx] + EPS))
    return FeatureBSPs(**{k: torch.cat(v).cpu().numpy() for k, v in out.items()})


def firing_rate_given_label(features: Any, labels: torch.Tensor | np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(n, G): P(feature on | label g true) over the positions, a feature on where its value is > 0, from
    ``features`` (P, n; an array or a column store) and ``labels`` (P, G) bool; NaN where a label is never
    true."""
    lab = torch.as_tensor(labels).float()
    count = lab.sum(0)
    n = features.shape[1]
    chunk = block_width(features.shape[0], chunk)
    hits = torch.cat([(column_block(features, lo, min(n, lo + chunk)) > 0).float().T @ lab
                      for lo in range(0, n, chunk)])
    rate = hits / count.clamp_min(1)[None, :]
    rate[:, count == 0] = float("nan")
    return rate.numpy()
