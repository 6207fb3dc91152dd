"""Sampling a feature's examples for explanation and scoring (METHODS sec 6), with delphi's faults fixed.

From every window (32 tokens) of a corpus and one feature's activation at each token:
- activating windows: the feature is non-zero somewhere in the window;
- explainer set: ``n_explain`` activating windows drawn at random;
- test set: from the activating windows NOT in the explainer set (disjoint, unlike delphi), ``per_decile``
  from each of ``n_deciles`` deciles of the windows' max activation (equal-count slices of the sorted
  maxima, decile 0 the weakest), drawn at random;
- non-activating set: ``n_negative`` windows where the feature is zero everywhere, drawn without
  replacement (delphi draws with replacement).
A feature with fewer than ``min_activating`` activating windows, or too few non-activating ones, is
skipped with the reason recorded. A feature with enough to score but fewer test windows than the full
``per_decile * n_deciles`` is scored on a balanced set (as many non-activating windows as test windows,
``FeatureExamples.balanced`` says so), so that a judge answering always yes (or always no) scores 0.5 on
every feature instead of a number that depends on how many windows the feature had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Window:
    index: int  # window index in the corpus
    tokens: np.ndarray  # (T,) token ids
    acts: np.ndarray  # (T,) the feature's activation
    decile: int = -1  # test windows: decile of the max activation; -1: explainer or non-activating;
    # -2: a similar negative (off here, on for a feature with similar top tokens)

    @property
    def max_act(self) -> float:
        return float(self.acts.max())


@dataclass
class FeatureExamples:
    feature: int
    explain: list[Window] = field(default_factory=list)
    test: list[Window] = field(default_factory=list)
    non_activating: list[Window] = field(default_factory=list)
    skipped: str = ""  # the reason, when the feature cannot be scored
    balanced: str = ""  # set when too few test windows made the test set balanced (the reason)
    similar_to: int | None = None  # the feature whose windows gave the similar negatives


def sample_examples(feature: int, tokens: np.ndarray, acts: np.ndarray, n_explain: int = 20, per_decile: int = 10,
                    n_deciles: int = 10, n_negative: int = 100, min_activating: int | None = None,
                    seed: int = 0) -> FeatureExamples:
    """``tokens`` (W, T) and ``acts`` (W, T): every window of the corpus and the feature's activations."""
    return sample_from_stats(feature, acts.max(axis=1), (acts != 0).sum(axis=1), lambda idx: (tokens[idx], acts[idx]),
                             n_explain, per_decile, n_deciles, n_negative, min_activating, seed)


def sample_from_stats(feature: int, maxima: np.ndarray, nonzero: np.ndarray, load, n_explain: int = 20,
                      per_decile: int = 10, n_deciles: int = 10, n_negative: int = 100,
                      min_activating: int | None = None, seed: int = 0) -> FeatureExamples:
    """The same from per-window statistics (max activation, count of non-zero tokens) and ``load(indices)
    -> (tokens, acts)`` of the chosen windows only: what the streamed cache gives."""
    rng = np.random.default_rng([seed, feature])
    out = FeatureExamples(feature)
    active = np.flatnonzero(maxima > 0)
    inactive = np.flatnonzero(nonzero == 0)
    need = min_activating if min_activating is not None else n_explain + n_deciles
    if len(active) < need:
        out.skipped = f"{len(active)} activating windows, fewer than {need}"
        return out
    if len(inactive) < n_negative:
        out.skipped = f"{len(inactive)} non-activating windows, fewer than {n_negative}"
        return out
    explain = rng.choice(active, size=min(n_explain, len(active) - n_deciles), replace=False)
    rest = np.setdiff1d(active, explain)
    ranked = rest[np.argsort(maxima[rest], kind="stable")]
    test = []
    for d, chunk in enumerate(np.array_split(ranked, n_deciles)):
        picked = rng.choice(chunk, size=min(per_decile, len(chunk)), replace=False)
        test += [(int(i), d) for i in picked]
    full = per_decile * n_deciles
    if len(test) < full:
        out.balanced = f"{len(test)} test windows, fewer than {full}: scored against {len(test)} non-activating ones"
    negatives = rng.choice(inactive, size=n_negative if len(test) >= full else min(n_negative, len(test)),
                           replace=False)

    def windows(idx: list[int], deciles: list[int]) -> list[Window]:
        tok, act = load(np.asarray(idx, dtype=np.int64))
        return [Window(int(i), tok[k], act[k], d) for k, (i, d) in enumerate(zip(idx, deciles))]

    out.explain = windows(explain.tolist(), [-1] * len(explain))
    out.test = windows([i for i, _ in test], [d for _, d in test])
    out.non_activating = windows(negatives.tolist(), [-1] * len(negatives))
    return out
