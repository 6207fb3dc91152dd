"""Prompts of the explainer and the scorers, and reading the explainer's answer.

Explainer (as delphi's default): each example's tokens, those above 0.3 x the example's max activation
wrapped in << >>, followed by the marked tokens with their activation level 0-10; the answer is the line
after "[EXPLANATION]:". Detection: numbered examples, answer a list of 0/1 (does the feature fire in it).
Fuzzing: numbered examples with tokens marked, answer a list of 0/1 (are the marked tokens the ones the
explanation describes).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

Decode = Callable[[int], str]  # token id -> its text
MARK = 0.3  # tokens above this fraction of the example's max activation are marked

EXPLAINER_SYSTEM = (
    "You are a meticulous interpretability researcher. You will see text examples in which a neuron of a "
    "language model fires; the tokens where it fires are marked <<like this>>, and after each example the "
    "marked tokens are listed with the activation strength (0-10). Find the pattern that explains where the "
    "neuron fires: the marked tokens and, if relevant, their context. Answer with one short phrase on a "
    "final line that starts with [EXPLANATION]:")
DETECTION_SYSTEM = (
    "You will see an explanation of a language-model neuron and numbered text examples. For each example, "
    "decide whether the neuron fires somewhere in it, given the explanation. Answer only with a list of "
    "0/1 values, one per example, in order, for example [1, 0, 0, 1, 0].")
FUZZING_SYSTEM = (
    "You will see an explanation of a language-model neuron and numbered text examples with some tokens "
    "marked <<like this>>. For each example, decide whether the marked tokens are the ones the explanation "
    "describes (1) or not (0). Answer only with a list of 0/1 values, one per example, in order, for "
    "example [1, 0, 0, 1, 0].")


def marked_text(tokens: np.ndarray, decode: Decode, marked: np.ndarray) -> str:
    """The window's text with the tokens where ``marked`` is true wrapped in << >>."""
    return "".join(f"<<{decode(int(t))}>>" if m else decode(int(t)) for t, m in zip(tokens, marked))


def activation_mask(acts: np.ndarray, frac: float = MARK) -> np.ndarray:
    top = acts.max()
    return (acts > frac * top) & (acts > 0) if top > 0 else np.zeros_like(acts, dtype=bool)


def explainer_messages(windows: list, decode: Decode, frac: float = MARK) -> list[dict[str, str]]:
    """The explainer's prompt; tokens above ``frac`` x the example's max are marked (``frac=0``: every token
    with a non-zero activation, e.g. every token routed to an expert)."""
    parts = []
    for i, w in enumerate(windows, start=1):
        mask = activation_mask(w.acts, frac)
        levels = np.round(10 * w.acts / w.acts.max()).astype(int) if w.acts.max() > 0 else np.zeros(len(w.acts), int)
        listed = ", ".join(f"({decode(int(t))!r}, {lv})" for t, lv, m in zip(w.tokens, levels, mask) if m)
        parts.append(f"Example {i}: {marked_text(w.tokens, decode, mask)}\nActivations: {listed}")
    return [{"role": "system", "content": EXPLAINER_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def has_explanation(reply: str) -> bool:
    """Whether the reply follows the format (an "[EXPLANATION]:" line); else ``read_explanation`` guesses."""
    return any(m.strip() for m in re.findall(r"\[EXPLANATION\][ \t]*:?(.*)", reply))


def read_explanation(reply: str) -> str:
    """The phrase after the last "[EXPLANATION]:", else the reply's last non-empty line; one line, trimmed."""
    m = re.findall(r"\[EXPLANATION\]\s*:?\s*(.+)", reply)
    text = m[-1] if m else next((ln for ln in reversed(reply.strip().splitlines()) if ln.strip()), "")
    return text.strip().strip('"').strip()


def detection_messages(explanation: str, texts: list[str]) -> list[dict[str, str]]:
    body = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts, start=1))
    return [{"role": "system", "content": DETECTION_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{body}\n\nAnswer ({len(texts)} values):"}]


def fuzzing_messages(explanation: str, texts: list[str]) -> list[dict[str, str]]:
    body = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts, start=1))
    return [{"role": "system", "content": FUZZING_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{body}\n\nAnswer ({len(texts)} values):"}]


SINGLE_ANSWER = " Answer with one digit: 1 for yes, 0 for no."


def single_messages(kind: str, explanation: str, text: str) -> list[dict[str, str]]:
    """One example, one digit: for backends whose answer is read from the probabilities of "1" and "0"."""
    system = (DETECTION_SYSTEM if kind == "detection" else FUZZING_SYSTEM).split(" Answer only")[0]
    question = "Does the neuron fire in this example?" if kind == "detection" else \
        "Are the marked tokens the ones the explanation describes?"
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Explanation: {explanation}\n\nExample: {text}\n\n{question}{SINGLE_ANSWER}"}]
