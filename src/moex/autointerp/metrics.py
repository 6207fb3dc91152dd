"""Scores of a scorer's answers: accuracy, balanced accuracy, precision, recall, F1, accuracy per
activation decile and on the non-activating windows, AUC when probabilities exist, 95% Wilson intervals;
every number beside the count of examples whose reply failed to parse. Where no reply could be read, the
accuracy is None ("not scored"), not 0."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (0, 0 for n = 0)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@dataclass
class Answer:
    """One scored example: its truth, the decile of an activating example (-1: non-activating), the
    prediction (None: the reply failed to parse) and, when the backend gives it, P(yes)."""

    label: int
    decile: int
    prediction: int | None
    probability: float | None = None


def binary_metrics(answers: list[Answer]) -> dict[str, Any]:
    ok = [a for a in answers if a.prediction is not None]
    y = np.array([a.label for a in ok], dtype=int)
    p = np.array([a.prediction for a in ok], dtype=int)
    tp, tn = int(((p == 1) & (y == 1)).sum()), int(((p == 0) & (y == 0)).sum())
    fp, fn = int(((p == 1) & (y == 0)).sum()), int(((p == 0) & (y == 1)).sum())
    n = len(ok)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    out: dict[str, Any] = {
        "n": n, "failed": len(answers) - n, "accuracy": (tp + tn) / n if n else None,
        "accuracy_ci95": wilson(tp + tn, n), "balanced_accuracy": (recall + tnr) / 2, "precision": precision,
        "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_rate": float(p.mean()) if n else None,  # an always-yes judge shows here at a glance
    }
    probs = [a.probability for a in ok]
    if ok and all(q is not None for q in probs) and len(set(y.tolist())) == 2:
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(y, probs))
    return out


def format_accuracy(m: dict[str, Any]) -> str:
    """An accuracy for a table: ``0.734``, or ``not scored (n unreadable)`` when no answer could be read."""
    if m.get("accuracy") is None:
        return f"not scored ({m.get('failed', 0)} unreadable)"
    return f"{m['accuracy']:.3f}"


def decile_table(answers: list[Answer], n_deciles: int = 10) -> dict[str, Any]:
    """Accuracy (with its 95% interval and failures) per decile of the activating examples, on the
    non-activating ones (``"not"``) and, when scored, on the similar negatives (``"similar"``, decile -2):
    the Fig. 8 table."""
    rows = {}
    groups = [(str(d), [a for a in answers if a.decile == d]) for d in range(n_deciles)]
    groups.append(("not", [a for a in answers if a.decile == -1]))
    if any(a.decile == -2 for a in answers):
        groups.append(("similar", [a for a in answers if a.decile == -2]))
    for key, sel in groups:
        ok = [a for a in sel if a.prediction is not None]
        right = sum(a.prediction == a.label for a in ok)
        rows[key] = {"n": len(ok), "failed": len(sel) - len(ok), "accuracy": right / len(ok) if ok else None,
                     "ci95": wilson(right, len(ok))}
    return rows
