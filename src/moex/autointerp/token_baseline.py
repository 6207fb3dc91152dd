"""The token baseline: an explainer and a scorer that need no LLM. It is the floor an LLM's explanation should
beat, and a measure of how token-level a feature (or an expert) is: paper two asks whether experts are more
than token processors.

Explainer, on the explain windows only: at every firing position (non-zero activation) count the token there
and the token before it; a token's lift is P(token | firing) / P(token | corpus). The explanation is the
tokens of lift >= ``min_lift`` seen at least twice, in decreasing count, until they cover ``cover`` of the
firing positions (at most ``max_tokens``), for the current token or the previous one, whichever covers more.
Scorer: a position matches when its token (or the token before it) is in the explanation; detection says
"fires" for a window with a match, fuzzing says "these are the firing tokens" when most marked positions
match. Both are scored on the same windows as the LLM's, with the same metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from .examples import FeatureExamples, Window
from .metrics import Answer, binary_metrics
from .scoring import fuzzing_marks


@dataclass
class TokenExplanation:
    tokens: tuple[int, ...]
    previous: bool  # the tokens are those before the firing position
    coverage: float  # share of the explain windows' firing positions that match

    def matches(self, tokens: np.ndarray) -> np.ndarray:
        """(T,) bool: the positions of ``tokens`` that the explanation names."""
        hit = np.isin(np.asarray(tokens), self.tokens)
        if not self.previous:
            return hit
        return np.concatenate([[False], hit[:-1]])

    def text(self, decode) -> str:
        names = ", ".join(repr(decode(t)) for t in self.tokens) or "nothing"
        return f"{'the token after ' if self.previous else ''}{names}"


def explain_tokens(windows: list[Window], background: np.ndarray, min_lift: float = 2.0, cover: float = 0.8,
                   max_tokens: int = 8) -> TokenExplanation:
    """The tokens (or previous tokens) over-represented where the feature fires in ``windows``; ``background``
    holds every token's count in the corpus."""
    p_corpus = background / max(1, background.sum())
    best = TokenExplanation((), False, 0.0)
    for previous in (False, True):
        counts: Counter = Counter()
        for w in windows:
            pos = np.flatnonzero(np.asarray(w.acts) != 0)
            if previous:
                pos = pos[pos > 0] - 1
            counts.update(np.asarray(w.tokens)[pos].tolist())
        total = sum(counts.values())
        chosen, covered = [], 0
        for tok, n in counts.most_common():
            if covered >= cover * total or len(chosen) == max_tokens:
                break
            lift = (n / total) / max(p_corpus[tok] if tok < len(p_corpus) else 0.0, 1e-12)
            if n >= 2 and lift >= min_lift:
                chosen.append(int(tok))
                covered += n
        if total and covered / total > best.coverage:
            best = TokenExplanation(tuple(chosen), previous, covered / total)
    return best


def token_answers(expl: TokenExplanation, ex: FeatureExamples, seed: int = 0) -> tuple[list[Answer], list[Answer]]:
    """(detection, fuzzing) answers of the token scorer on ``ex``'s test and non-activating windows."""
    det = [Answer(label, w.decile if label else min(w.decile, -1), int(expl.matches(w.tokens).any()))
           for label, ws in ((1, ex.test), (0, ex.non_activating)) for w in ws]
    fuz = []
    for w, label, mask in fuzzing_marks(ex, seed):
        hit = expl.matches(w.tokens)[mask]
        fuz.append(Answer(label, w.decile if label else min(w.decile, -1), int(hit.size > 0 and hit.mean() > 0.5)))
    return det, fuz


def random_explanation(expl: TokenExplanation, background: np.ndarray, rng: np.random.Generator) -> TokenExplanation:
    """As many tokens as ``expl`` names, drawn by corpus frequency: the chance level of the token scorer."""
    p = background / background.sum()
    n = max(1, len(expl.tokens))
    tokens = rng.choice(len(p), size=min(n, int((p > 0).sum())), replace=False, p=p)
    return TokenExplanation(tuple(int(t) for t in tokens), expl.previous, 0.0)


def token_baseline(ex: FeatureExamples, background: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The token explanation of ``ex``, its detection and fuzzing answers and scores (``binary_metrics``), and
    the detection answers of a random explanation of as many tokens (``random_detection``: chance level)."""
    expl = explain_tokens(ex.explain, background)
    det, fuz = token_answers(expl, ex, seed)
    chance, _ = token_answers(random_explanation(expl, background, np.random.default_rng([seed, ex.feature])), ex, seed)
    return {"explanation": expl, "detection": det, "fuzzing": fuz, "random_detection": chance,
            "scores": {"tokens": list(expl.tokens), "previous": expl.previous, "coverage": expl.coverage,
                       "detection": binary_metrics(det), "fuzzing": binary_metrics(fuz)}}
