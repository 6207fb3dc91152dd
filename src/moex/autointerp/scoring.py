"""Detection and fuzzing scores of one explanation: examples shuffled, shown ``per_prompt`` at a time,
requests run concurrently (bounded), every reply parsed on its own; an unreadable reply fails only its
own examples, which are counted (``Answer.prediction`` None) and reported beside every metric."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from .examples import FeatureExamples, Window
from .metrics import Answer
from .parse import parse_binary_list
from .prompts import Decode, activation_mask, detection_messages, fuzzing_messages, marked_text, single_messages


class LLM(Protocol):
    def complete(self, messages: list[dict[str, str]]) -> str: ...


def _run(llm: LLM, items: list[tuple[Window, int, str]], build, explanation: str, per_prompt: int,
         concurrency: int, seed: int, mode: str = "list") -> tuple[list[Answer], Counter]:
    if mode == "probability":
        kind = "detection" if build is detection_messages else "fuzzing"
        prompts = [single_messages(kind, explanation, text) for _, _, text in items]
        if hasattr(llm, "yes_probabilities"):  # one explanation: a shared prefix, batched (LocalChat)
            probs = llm.yes_probabilities(prompts)
        else:
            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                probs = list(pool.map(llm.yes_probability, prompts))
        unread = Counter({"neither '1' nor '0' among the top log-probabilities": sum(p is None for p in probs)})
        return [Answer(label, w.decile if label else min(w.decile, -1), None if p is None else int(p > 0.5), p)
                for (w, label, _), p in zip(items, probs)], +unread
    order = np.random.default_rng(seed).permutation(len(items))
    batches = [[items[i] for i in order[lo:lo + per_prompt]] for lo in range(0, len(order), per_prompt)]
    def ask(batch):
        messages = build(explanation, [t for _, _, t in batch])
        if hasattr(llm, "complete_binary_list"):  # a local model: its reply decoded under the list format
            return llm.complete_binary_list(messages, len(batch))
        return llm.complete(messages)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        replies = list(pool.map(ask, batches))
    answers, failures = [], Counter()
    for batch, reply in zip(batches, replies):
        parsed = parse_binary_list(reply, len(batch))
        if parsed.values is None:
            failures[parsed.error] += len(batch)
        for j, (w, label, _) in enumerate(batch):
            answers.append(Answer(label, w.decile if label else min(w.decile, -1),
                                  None if parsed.values is None else parsed.values[j]))
    return answers, failures


def scoring_mode(llm: LLM, mode: str = "auto") -> str:
    """``list`` (a 0/1 list per prompt of several examples, parsed) or ``probability`` (one example per prompt,
    P("1") against P("0") of the next token: needs ``llm.yes_probability``); ``auto`` prefers the latter."""
    gives = hasattr(llm, "yes_probability") and getattr(llm, "logprobs", True)
    if mode == "auto":
        return "probability" if gives else "list"
    if mode == "probability" and not gives:
        raise ValueError(f"{getattr(llm, 'name', llm)} gives no token probabilities: use the list scorer "
                         "(an OpenAI-compatible endpoint that returns top_logprobs: the setting logprobs=true)")
    return mode


def detection(llm: LLM, explanation: str, ex: FeatureExamples, decode: Decode, per_prompt: int = 5,
              concurrency: int = 4, seed: int = 0, mode: str = "list",
              mark_routed: bool = False) -> tuple[list[Answer], Counter]:
    """Does the feature fire in this window? Test windows (label 1) and non-activating ones (label 0).
    ``mark_routed`` (experts, METHODS sec 7): each window marked where its own activations are non-zero, i.e.
    a held-out window at the tokens routed to this expert, a negative at those routed to its own expert."""
    def text(w: Window) -> str:
        return marked_text(w.tokens, decode, np.asarray(w.acts) > 0 if mark_routed else np.zeros(len(w.tokens), bool))

    items = [(w, 1, text(w)) for w in ex.test] + [(w, 0, text(w)) for w in ex.non_activating]
    return _run(llm, items, detection_messages, explanation, per_prompt, concurrency, seed, mode)


def fuzzing(llm: LLM, explanation: str, ex: FeatureExamples, decode: Decode, per_prompt: int = 5,
            concurrency: int = 4, seed: int = 0, mode: str = "list") -> tuple[list[Answer], Counter]:
    """Are the marked tokens the activating ones? (``fuzzing_marks``)"""
    items = [(w, label, marked_text(w.tokens, decode, m)) for w, label, m in fuzzing_marks(ex, seed)]
    return _run(llm, items, fuzzing_messages, explanation, per_prompt, concurrency, seed, mode)


def fuzzing_marks(ex: FeatureExamples, seed: int = 0) -> list[tuple[Window, int, np.ndarray]]:
    """The fuzzing examples: test windows marked where the feature fires (label 1); non-activating windows
    marked at as many random tokens as a test window has on average (label 0)."""
    rng = np.random.default_rng([seed, ex.feature])
    masks = [activation_mask(w.acts) for w in ex.test]
    n_marked = max(1, int(round(np.mean([m.sum() for m in masks])))) if masks else 1
    items = [(w, 1, m) for w, m in zip(ex.test, masks)]
    for w in ex.non_activating:
        m = np.zeros(len(w.tokens), bool)
        m[rng.choice(len(w.tokens), size=min(n_marked, len(w.tokens)), replace=False)] = True
        items.append((w, 0, m))
    return items
