"""Streaming statistics of a site's features (and of an MoE layer's experts) over token rows, for the browser.

Rows are cut into windows of ``window`` tokens (chess: one window per game prefix); a window's score for a
feature is its max activation there. A feature fires where its activation is > 0.
- Pass 1: f_max (over all rows, and over the first ``fmax_rows``), firing counts, the ``top`` windows of every
  feature with their per-token activations, and the features at chosen positions (chess: the evaluation
  positions).
- Pass 2 (f_max known): the histogram of a / f_max over the firing tokens (``BINS`` equal bins of (0, 1]),
  and per activation decile (of a window's score / f_max) a uniform random sample of windows.
Memory: O(top x features x window) plus one batch, whatever the number of rows; the features at the chosen
positions go to a column store on disk (``PositionFeatures``), read back a block of columns at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from ..progress import progress_bar

from ..interp.sites import Site, collect

BINS = 20
DECILES = 10


class TopWindows:
    """Per column (feature or expert), the ``k`` windows of highest score seen so far: scores (k, n), window ids
    (k, n) and per-token activations (k, n, W)."""

    def __init__(self, k: int, n: int, window: int):
        self.scores = torch.full((k, n), -torch.inf)
        self.ids = torch.full((k, n), -1, dtype=torch.long)
        self.acts = torch.zeros(k, n, window)

    def update(self, scores: Tensor, ids: Tensor, acts: Tensor) -> None:
        """Merge a batch: ``scores`` (m, n) per window and column, ``ids`` (m,), ``acts`` (m, W, n)."""
        k, n, w = self.acts.shape
        kk = min(k, scores.shape[0])
        val, pos = scores.topk(kk, dim=0)  # the batch's best, then merge with the kept ones
        new_acts = acts.permute(0, 2, 1).gather(0, pos[..., None].expand(kk, n, w))
        all_scores = torch.cat([self.scores, val])
        best, where = all_scores.topk(k, dim=0)
        self.ids = torch.cat([self.ids, ids[pos]]).gather(0, where)
        self.acts = torch.cat([self.acts, new_acts]).gather(0, where[..., None].expand(k, n, w))
        self.scores = best


class PositionFeatures:
    """A (positions x features) float32 matrix kept on disk in blocks of ``block`` columns, appended a few rows
    at a time and read back a block of columns at a time (``columns``), so that memory does not grow with the
    number of positions. ``fires`` counts, per feature, the positions where it is > 0. The files live in a
    temporary directory removed with the object."""

    def __init__(self, width: int, block: int = 512):
        self.width, self.block, self.n = width, block, 0
        self._dir = tempfile.TemporaryDirectory(prefix="moex-positions-")
        self._paths = [Path(self._dir.name) / f"{lo}.f32" for lo in range(0, width, block)]
        self._files = [open(p, "wb") for p in self._paths]
        self.fires = np.zeros(width, np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.width)

    def append(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, self.width)
        for i, f in enumerate(self._files):
            f.write(np.ascontiguousarray(rows[:, i * self.block:(i + 1) * self.block]).tobytes())
        self.fires += (rows > 0).sum(0)
        self.n += rows.shape[0]

    def _block(self, i: int) -> np.ndarray:
        self._files[i].flush()
        width = min(self.block, self.width - i * self.block)
        return np.fromfile(self._paths[i], dtype=np.float32).reshape(self.n, width)

    def columns(self, lo: int, hi: int) -> np.ndarray:
        """(positions, hi - lo) float32: columns ``lo:hi``, read from the blocks that hold them."""
        first, last = lo // self.block, (hi - 1) // self.block
        blocks = [self._block(i) for i in range(first, last + 1)]
        joined = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        return joined[:, lo - first * self.block:hi - first * self.block]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.columns(0, self.width) if self.width else np.zeros((self.n, 0), np.float32)
        return out if dtype is None else out.astype(dtype)


@dataclass
class FeatureStats:
    width: int
    window: int
    n_tokens: int = 0
    f_max: Tensor | None = None  # (n,) over all rows
    f_max_first: Tensor | None = None  # (n,) over the first fmax_rows rows
    firing: Tensor | None = None  # (n,) tokens with activation > 0
    top: TopWindows | None = None
    histogram: Tensor | None = None  # (n, BINS)
    deciles: list[TopWindows] = field(default_factory=list)  # per decile; scores are random keys
    at_positions: PositionFeatures | None = None  # (P, n) features at the chosen positions, on disk
    occurrences: Tensor | None = None  # (V,) tokens of each id (small vocabularies only)
    firing_by_token: Tensor | None = None  # (V, n) firing tokens of each id

    @property
    def frequency(self) -> Tensor:
        return self.firing / max(1, self.n_tokens)


def windowed(feats: Tensor, mask: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """(B, T, n) features -> per-window scores (B * nw, n) (max over the window's real tokens, -inf where it
    has none) and activations (B * nw, W, n) (0 on padding)."""
    b, t, n = feats.shape
    nw = -(-t // window)
    padded = feats.new_zeros(b, nw * window, n)
    padded[:, :t] = feats * mask[..., None]
    real = torch.zeros(b, nw * window, dtype=torch.bool, device=feats.device)
    real[:, :t] = mask
    acts = padded.reshape(b * nw, window, n)
    scores = acts.masked_fill(~real.reshape(b * nw, window, 1), -torch.inf).amax(dim=1)
    return scores, acts


def batch_rows(width: int, length: int, budget: int = 8_000_000) -> int:
    """Rows per batch that keep one batch's features near ``budget`` values."""
    return max(1, min(64, budget // max(1, width * length)))


@torch.no_grad()
def feature_stats(site: Site, rows: Sequence[Sequence[int]], window: int, top: int = 8, per_decile: int = 0,
                  fmax_rows: int | None = None, positions: Sequence[Sequence[int]] | None = None,
                  device: str = "cpu", seed: int = 0, progress: bool = True, vocab: int = 0) -> FeatureStats:
    """Both passes over ``rows`` (token id lists, at most the model's context each). With a small ``vocab``
    (a character model), also each feature's firing count per token id."""
    length = max(len(r) for r in rows)
    nw = -(-length // window)
    batch = batch_rows(site.width, length)
    st = FeatureStats(site.width, window)
    st.top = TopWindows(top, site.width, window)
    if vocab:
        st.occurrences, st.firing_by_token = torch.zeros(vocab), torch.zeros(vocab, site.width)
    n_first = len(rows) if fmax_rows is None else fmax_rows
    if positions is not None:
        st.at_positions = PositionFeatures(site.width)
    bar = progress_bar(total=2 * len(rows), desc="feature statistics", unit=" rows", disable=not progress)
    for chunk in collect(site, rows, batch=batch, device=device, length=length):
        f, mask = chunk.features.cpu(), chunk.mask.cpu()
        valid = f[mask]
        st.n_tokens += valid.shape[0]
        m = valid.amax(dim=0)
        st.f_max = m if st.f_max is None else torch.maximum(st.f_max, m)
        first = mask & (torch.arange(chunk.index, chunk.index + len(f)) < n_first)[:, None]
        if first.any():
            m = f[first].amax(dim=0)
            st.f_max_first = m if st.f_max_first is None else torch.maximum(st.f_max_first, m)
        fire = (valid > 0).sum(dim=0)
        st.firing = fire if st.firing is None else st.firing + fire
        if vocab:
            onehot = torch.nn.functional.one_hot(chunk.tokens.cpu()[mask], vocab).float()  # (N, V)
            st.occurrences += onehot.sum(0)
            st.firing_by_token += onehot.T @ (valid > 0).float()
        scores, acts = windowed(f, mask, window)
        st.top.update(scores, torch.arange(chunk.index * nw, (chunk.index + len(f)) * nw), acts)
        if positions is not None:
            st.at_positions.append(np.concatenate([f[i, list(positions[chunk.index + i])].numpy()
                                                   for i in range(len(f))]))
        bar.update(len(f))
    st.histogram = torch.zeros(site.width, BINS + 1)
    st.deciles = [TopWindows(per_decile, site.width, window) for _ in range(DECILES)] if per_decile else []
    gen = torch.Generator().manual_seed(seed)
    scale = torch.where(st.f_max > 0, st.f_max, torch.ones_like(st.f_max))
    for chunk in collect(site, rows, batch=batch, device=device, length=length):
        f, mask = chunk.features.cpu(), chunk.mask.cpu()
        valid = f[mask]
        bins = torch.where(valid > 0, (valid / scale * BINS).ceil().clamp(1, BINS), 0).long()
        st.histogram.scatter_add_(1, bins.T, torch.ones(bins.shape[1], bins.shape[0]))
        if st.deciles:
            scores, acts = windowed(f, mask, window)
            ids = torch.arange(chunk.index * nw, (chunk.index + len(f)) * nw)
            decile = (scores / scale * DECILES).ceil().clamp(1, DECILES) - 1
            keys = torch.rand(scores.shape, generator=gen)
            for d, kept in enumerate(st.deciles):
                kept.update(torch.where((scores > 0) & (decile == d), keys, -torch.inf), ids, acts)
        bar.update(len(f))
    bar.close()
    st.histogram = st.histogram[:, 1:]
    return st


@dataclass
class ExpertStats:
    n_experts: int
    n_tokens: int
    routed: Tensor  # (E,) tokens routed to each expert
    active_units: Tensor  # (E,) sum over routed tokens of the expert's non-zero units
    units_per_expert: int
    top: TopWindows  # by expert-level activation (router weight x ||expert output||)
    token_counts: Tensor  # (E, vocab) routed occurrences of each token id
    occurrences: Tensor  # (vocab,) occurrences of each token id

    @property
    def share(self) -> Tensor:
        return self.routed / max(1, self.n_tokens)

    @property
    def mean_l0(self) -> Tensor:
        return self.active_units / self.routed.clamp_min(1)


@torch.no_grad()
def expert_stats(reader, rows: Sequence[Sequence[int]], layer: int, window: int, vocab: int, top: int = 8,
                 batch: int = 16, progress: bool = True) -> ExpertStats:
    """Routing share, mean active units on routed tokens, top windows by expert-level activation and routed
    token counts of every expert of MoE ``layer`` (``interp.readers.LayerCapture``)."""
    length = max(len(r) for r in rows)
    nw = -(-length // window)
    n_exp = reader.n_experts(layer)
    routed, active = torch.zeros(n_exp), torch.zeros(n_exp)
    counts, occ = torch.zeros(n_exp, vocab), torch.zeros(vocab)
    best = TopWindows(top, n_exp, window)
    n_tokens, units = 0, 0
    for lo in progress_bar(range(0, len(rows), batch), desc="expert statistics", disable=not progress):
        part = rows[lo:lo + batch]
        ids = torch.zeros(len(part), length, dtype=torch.long)
        mask = torch.zeros(len(part), length, dtype=torch.bool)
        for i, r in enumerate(part):
            ids[i, :len(r)] = torch.as_tensor(list(r))
            mask[i, :len(r)] = True
        cap = reader.capture(ids, layer)
        flat_mask = mask.reshape(-1)
        act = cap.expert_activation().cpu()  # (N, E)
        units = cap.experts.units_per_expert
        tok = ids.reshape(-1)
        n_tokens += int(flat_mask.sum())
        occ += torch.bincount(tok[flat_mask], minlength=vocab)[:vocab].float()
        for e in range(n_exp):
            t_idx, u = cap.expert_units(e)
            t_idx = t_idx.cpu()
            keep = flat_mask[t_idx]
            routed[e] += keep.sum()
            active[e] += (u.cpu()[keep] != 0).sum()
            counts[e] += torch.bincount(tok[t_idx[keep]], minlength=vocab)[:vocab].float()
        scores, acts = windowed(act.reshape(len(part), length, n_exp), mask, window)
        best.update(scores, torch.arange(lo * nw, (lo + len(part)) * nw), acts)
    return ExpertStats(n_exp, n_tokens, routed, active, units, best, counts, occ)
