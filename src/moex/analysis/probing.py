"""k-sparse probing of dense neurons vs expert neurons (Gurnee et al. 2023, as "The Expert Strikes Back"
applies it; METHODS sec 7).

For one concept and one set of units (a dense MLP's hidden units, or one expert's units on the tokens
routed to it, not multiplied by the router weight): a stratified 75/25 split; units ranked by
|mean(positives) - mean(negatives)| on the train part; a logistic regression (C = 1, L2, saga, 500
iterations, balanced classes, seed 42) on the top k units, k in {1, 2, 4, ..., 64}; binary F1 on the
test part. A (layer, expert) set with fewer than ``min_count`` positives or negatives is skipped and
counted. Per layer both the reference's number (the max over experts: an MoE gets more draws) and the
mean over experts are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.text.concepts import ConceptSet

KS = (1, 2, 4, 8, 16, 32, 64)


def rank_units(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Units in decreasing |mean over positives - mean over negatives|."""
    diff = np.abs(x[y == 1].mean(0) - x[y == 0].mean(0))
    return np.argsort(-diff, kind="stable")


def split(y: np.ndarray, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, seed: int = 42):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, solver="saga", max_iter=500, class_weight="balanced",
                              random_state=seed).fit(x_train, y_train)


def k_sparse_probe(x: np.ndarray, y: np.ndarray, ks: tuple[int, ...] = KS, seed: int = 42) -> dict[str, Any]:
    """F1 of a probe on the top-k units for every k (k above the number of units is left out)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import f1_score

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    tr, te = split(y, seed)
    order = rank_units(x[tr], y[tr])
    f1 = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in ks:
            if k > x.shape[1]:
                break
            units = order[:k]
            probe = fit_probe(x[tr][:, units], y[tr], seed)
            f1[k] = float(f1_score(y[te], probe.predict(x[te][:, units])))
    return {"f1": f1, "top_units": order[:max(ks)].tolist(), "n_train": len(tr), "n_test": len(te),
            "positives": int(y.sum()), "negatives": int((1 - y).sum())}


@dataclass
class LayerProbe:
    """One concept at one layer: the dense probe, or every expert's (and the skipped ones)."""

    layer: int
    kind: str
    dense: dict | None = None
    experts: dict[int, dict] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)

    def best(self, k: int) -> float | None:
        """The reference's number: the dense F1, or the max over experts."""
        if self.dense is not None:
            return self.dense["f1"].get(k)
        vals = [e["f1"][k] for e in self.experts.values() if k in e["f1"]]
        return max(vals) if vals else None

    def mean(self, k: int) -> float | None:
        if self.dense is not None:
            return self.dense["f1"].get(k)
        vals = [e["f1"][k] for e in self.experts.values() if k in e["f1"]]
        return float(np.mean(vals)) if vals else None


@torch.no_grad()
def probe_concept(hf, concept: ConceptSet, layers: list[int], ks: tuple[int, ...] = KS, min_count: int = 50,
                  seed: int = 42) -> list[LayerProbe]:
    """k-sparse probes of one concept at ``layers`` of a reader (``interp.hf.HFModel`` or
    ``interp.experts.MoexReader``)."""
    out = []
    for layer in layers:
        hf.check_layer(layer)
        dense_x, labels, expert_x = [], [], {}
        for ids, pos, neg in zip(concept.tokens, concept.positives, concept.negatives):
            cap = hf.capture(torch.tensor([ids]), layer)
            lab = {p: 1 for p in pos} | {n: 0 for n in neg}
            if cap.kind == "dense":
                rows = sorted(lab)
                dense_x.append(cap.hidden[rows].float().cpu().numpy())
                labels += [lab[r] for r in rows]
                continue
            for e in range(cap.n_experts):
                token, units = cap.expert_units(e)
                keep = [(i, t) for i, t in enumerate(token.tolist()) if t in lab]
                if keep:
                    xs, ys = expert_x.setdefault(e, ([], []))
                    xs.append(units[[i for i, _ in keep]].float().cpu().numpy())
                    ys += [lab[t] for _, t in keep]
        lp = LayerProbe(layer, hf.kinds[layer])
        if lp.kind == "dense":
            y = np.asarray(labels)
            if min((y == 1).sum(), (y == 0).sum()) >= min_count:
                lp.dense = k_sparse_probe(np.concatenate(dense_x), y, ks, seed)
        else:
            for e in range(hf.n_experts(layer)):
                xs, ys = expert_x.get(e, ([], []))
                y = np.asarray(ys)
                if len(y) == 0 or min((y == 1).sum(), (y == 0).sum()) < min_count:
                    lp.skipped.append(e)
                    continue
                lp.experts[e] = k_sparse_probe(np.concatenate(xs), y, ks, seed)
        out.append(lp)
    return out
