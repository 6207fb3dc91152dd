"""The activation cache: a site's activations for chosen features over a token corpus, kept sparse in chunk
files on disk (memory bounded whatever the corpus), resumable (a finished chunk is not recomputed).

Rows: the corpus cut into rows of the model's context, each starting with BOS (the paper's setting;
``bos=False`` turns it off). What counts as activating: ``nonzero`` for sparse codes (ReLU, TopK, MoE-X,
SAE latents); dense activations that are never exactly zero (GELU) need a rule, ``topk:K`` keeps for
each token the K largest activations over all the site's features (the paper-era delphi rule). The rule
is stored with the cache and written in every output.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ..progress import progress_bar

from ..artifacts import atomic_write, read_json, write_json
from ..errors import MoexError


def iter_rows(tokens: Iterable[int], length: int, bos: int | None) -> Iterator[list[int]]:
    """Consecutive rows of ``length`` tokens, each led by ``bos`` (when given), streamed; a last partial row
    is dropped."""
    body = length - (bos is not None)
    row: list[int] = []
    for t in tokens:
        row.append(int(t))
        if len(row) == body:
            yield ([bos] if bos is not None else []) + row
            row = []



def apply_rule(feats: torch.Tensor, rule: str) -> torch.Tensor:
    """Zero what the rule does not count as activating: ``nonzero`` keeps all, ``topk:K`` the K largest per
    token (of the positive ones)."""
    if rule == "nonzero":
        return feats
    if rule.startswith("topk:"):
        k = int(rule.split(":")[1])
        vals, idx = feats.topk(min(k, feats.shape[-1]), dim=-1)
        return torch.zeros_like(feats).scatter(-1, idx, vals.clamp_min(0))
    raise MoexError(f"activation rule {rule!r}: expected nonzero or topk:K")


@dataclass
class ActivationCache:
    dir: Path
    features: list[int]
    rule: str
    n_rows: int
    row_length: int

    batch: int = 8  # rows per chunk file

    def chunks(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.npz"))

    def window_stats(self, feature: int, window: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Per window (a fixed grid of ``window`` tokens in every row): the feature's max activation and its
        count of non-zero tokens; read chunk by chunk (memory: one number per window, not per token)."""
        j = self.features.index(feature)
        per_row = self.row_length // window
        maxima = np.zeros(self.n_rows * per_row, dtype=np.float32)
        nonzero = np.zeros(self.n_rows * per_row, dtype=np.int32)
        for p in self.chunks():
            z = np.load(p)
            sel = (z["feature"] == j) & (z["pos"] < per_row * window)
            w = z["row"][sel] * per_row + z["pos"][sel] // window
            np.maximum.at(maxima, w, z["value"][sel])
            np.add.at(nonzero, w, 1)
        return maxima, nonzero

    def token_counts(self) -> np.ndarray:
        """How often each token id occurs in the cached rows (the corpus the token baseline compares with)."""
        counts = np.zeros(1, dtype=np.int64)
        for p in self.chunks():
            c = np.bincount(np.load(p)["tokens"].ravel())
            counts = np.pad(counts, (0, max(0, len(c) - len(counts))))
            counts[:len(c)] += c
        return counts

    def load_windows(self, feature: int, indices: np.ndarray, window: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and activations (len(indices), window) of the chosen windows only."""
        j = self.features.index(feature)
        per_row = self.row_length // window
        indices = np.asarray(indices, dtype=np.int64)
        tokens = np.zeros((len(indices), window), dtype=np.int64)
        acts = np.zeros((len(indices), window), dtype=np.float32)
        rows = indices // per_row
        for chunk_id in np.unique(rows // self.batch):
            z = np.load(self.dir / f"chunk-{chunk_id:06d}.npz")
            first = chunk_id * self.batch
            for k in np.flatnonzero(rows // self.batch == chunk_id):
                r, start = rows[k], indices[k] % per_row * window
                tokens[k] = z["tokens"][r - first, start:start + window]
                sel = (z["feature"] == j) & (z["row"] == r) & (z["pos"] >= start) & (z["pos"] < start + window)
                acts[k, z["pos"][sel] - start] = z["value"][sel]
        return tokens, acts


@torch.no_grad()
def cache_activations(site, rows: Iterable[list[int]], features: list[int], out_dir: str | Path,
                      rule: str = "nonzero", batch: int = 8, device: str = "cpu",
                      progress: bool = True) -> ActivationCache:
    """Run ``site`` over ``rows`` (any iterable: streamed, ``batch`` rows at a time) and keep the chosen
    ``features``' activations (after ``rule``) sparsely, one chunk file per batch. A chunk already written
    by the same settings is not recomputed."""
    from ..interp.sites import collect

    out_dir = Path(out_dir)
    meta_path = out_dir / "cache.json"
    meta = {"features": list(map(int, features)), "rule": rule, "site": getattr(site, "name", "?"),
            "layer": getattr(site, "layer", None), "batch": batch}
    if meta_path.exists() and {k: v for k, v in read_json(meta_path).items() if k in meta} != meta:
        raise MoexError(f"{meta_path}: a cache of other settings is there; choose another directory")
    sel = torch.tensor(features, dtype=torch.long)
    bar = progress_bar(desc="caching activations", unit=" rows", disable=not progress)
    it, n_rows, length = iter(rows), 0, 0
    while True:
        part = list(itertools.islice(it, batch))
        if not part:
            break
        length = len(part[0])
        path = out_dir / f"chunk-{n_rows // batch:06d}.npz"
        if not path.exists():
            chunk = next(collect(site, part, batch=batch, device=device))
            acts = apply_rule(chunk.features, rule)[..., sel.to(chunk.features.device)].cpu()
            r, p, f = torch.nonzero(acts, as_tuple=True)
            arrays = {"tokens": chunk.tokens.cpu().numpy().astype(np.int64), "row": (r + n_rows).numpy(),
                      "pos": p.numpy(), "feature": f.numpy(), "value": acts[r, p, f].numpy().astype(np.float32)}
            atomic_write(path, lambda tmp, a=arrays: np.savez(open(tmp, "wb"), **a))
        n_rows += len(part)
        bar.update(len(part))
    bar.close()
    if n_rows == 0:
        raise MoexError("no row to cache: the corpus is shorter than one row")
    write_json(meta_path, {**meta, "n_rows": n_rows, "row_length": length})
    return ActivationCache(out_dir, list(map(int, features)), rule, n_rows, length, batch)
