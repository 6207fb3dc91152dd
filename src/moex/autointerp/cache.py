"""The activation cache: a site's activations for chosen features over a token corpus, kept sparse in chunk
files on disk (memory bounded whatever the corpus), resumable (a finished chunk is not recomputed).

Rows: the corpus cut into rows of the model's context, each starting with BOS (the paper's setting;
``bos=False`` turns it off). What counts as activating: ``nonzero`` for sparse codes (ReLU, TopK, MoE-X,
SAE latents); dense activations that are never exactly zero (GELU) need a rule, ``topk:K`` keeps for
each token the K largest activations over all the site's features (the paper-era delphi rule). The rule
is stored with the cache and written in every output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..artifacts import atomic_write, read_json, write_json
from ..errors import MoexError


def corpus_rows(tokens: Iterable[int], length: int, bos: int | None) -> list[list[int]]:
    """Consecutive rows of ``length`` tokens, each led by ``bos`` (when given); a last partial row is dropped."""
    body = length - (bos is not None)
    flat = list(tokens)
    return [([bos] if bos is not None else []) + flat[i:i + body] for i in range(0, len(flat) - body + 1, body)]


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

    def chunks(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.npz"))

    def tokens(self) -> np.ndarray:
        return np.concatenate([np.load(p)["tokens"] for p in self.chunks()])

    def dense(self, feature: int) -> np.ndarray:
        """(rows, row_length) activations of one cached feature."""
        j = self.features.index(feature)
        out = np.zeros((self.n_rows, self.row_length), dtype=np.float32)
        for p in self.chunks():
            z = np.load(p)
            sel = z["feature"] == j
            out[z["row"][sel], z["pos"][sel]] = z["value"][sel]
        return out

    def windows(self, feature: int, window: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Non-overlapping ``window``-token windows on a fixed grid of every row: tokens and activations."""
        tok, act = self.tokens(), self.dense(feature)
        n = self.row_length // window * window
        return tok[:, :n].reshape(-1, window), act[:, :n].reshape(-1, window)


@torch.no_grad()
def cache_activations(site, rows: list[list[int]], features: list[int], out_dir: str | Path, rule: str = "nonzero",
                      batch: int = 8, device: str = "cpu", progress: bool = True) -> ActivationCache:
    """Run ``site`` over ``rows`` and keep the chosen ``features``' activations (after ``rule``) sparsely."""
    from ..interp.sites import collect

    out_dir = Path(out_dir)
    meta_path = out_dir / "cache.json"
    meta = {"features": list(map(int, features)), "rule": rule, "n_rows": len(rows), "row_length": len(rows[0]),
            "site": getattr(site, "name", "?"), "layer": getattr(site, "layer", None), "batch": batch}
    if meta_path.exists() and read_json(meta_path) != meta:
        raise MoexError(f"{meta_path}: a cache of other settings is there; choose another directory")
    write_json(meta_path, meta)
    sel = torch.tensor(features, dtype=torch.long)
    bar = tqdm(total=len(rows), desc="caching activations", unit=" rows", disable=not progress)
    for lo in range(0, len(rows), batch):
        path = out_dir / f"chunk-{lo // batch:06d}.npz"
        if not path.exists():
            chunk = next(collect(site, rows[lo:lo + batch], batch=batch, device=device))
            acts = apply_rule(chunk.features, rule)[..., sel.to(chunk.features.device)].cpu()
            r, p, f = torch.nonzero(acts, as_tuple=True)
            arrays = {"tokens": chunk.tokens.cpu().numpy().astype(np.int64), "row": (r + lo).numpy(),
                      "pos": p.numpy(), "feature": f.numpy(), "value": acts[r, p, f].numpy().astype(np.float32)}
            atomic_write(path, lambda tmp, a=arrays: np.savez(open(tmp, "wb"), **a))
        bar.update(min(batch, len(rows) - lo))
    bar.close()
    return ActivationCache(out_dir, list(map(int, features)), rule, len(rows), len(rows[0]))
