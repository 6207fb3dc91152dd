"""The judge check: before its scores are trusted, the scoring LLM (the judge) answers for synthetic features
whose right explanation is known, built from the user's own corpus and tokenizer.

Synthetic features (a token's activation is 1 where the rule holds, else 0): tokens that contain a digit;
the token right after the word "the"; tokens inside parentheses; words that start with a capital letter.
For each, ``n`` windows where it fires and ``n`` where it never fires are scored by the same detection
scorer the pipeline uses, once with the true explanation and once with a wrong one (the next feature's).
Reported per judge: how often the true explanation outscores the wrong one (balanced accuracy, strictly
higher), the balanced accuracy of the true explanations, and the judge's yes-rate on negatives.

A judge passes when the true explanation wins on at least ``min_win_rate`` of the features, its balanced
accuracy is at least ``min_balanced_accuracy``, and it says yes to at most ``max_negative_yes_rate`` of the
negatives: an always-yes (or always-no) judge has balanced accuracy 0.5, wins nothing, and fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import MoexError
from .examples import FeatureExamples, Window
from .metrics import binary_metrics
from .scoring import detection


class JudgeError(MoexError):
    """The judge failed its check and the run required it to pass (``--require-judge``)."""


class NotEnoughText(MoexError):
    """The corpus supplies too few windows for the synthetic features."""


@dataclass(frozen=True)
class SyntheticFeature:
    name: str
    explanation: str
    fires: Callable[[list[str]], np.ndarray]  # the window's token texts -> (T,) bool


def _digits(texts: list[str]) -> np.ndarray:
    return np.array([any(c.isdigit() for c in t) for t in texts])


def _after_the(texts: list[str]) -> np.ndarray:
    prev = ["", *texts[:-1]]
    return np.array([p.strip().lower() == "the" for p in prev])


def _in_parentheses(texts: list[str]) -> np.ndarray:
    depth, out = 0, []
    for t in texts:
        inside = depth > 0 and ")" not in t
        depth = max(0, depth + t.count("(") - t.count(")"))
        out.append(inside and bool(t.strip()))
    return np.array(out)


def _capitalised(texts: list[str]) -> np.ndarray:
    return np.array([t.lstrip()[:1].isalpha() and t.lstrip()[:1].isupper() for t in texts])


SYNTHETIC = (
    SyntheticFeature("digits", "tokens that contain a digit (numbers, years, dates)", _digits),
    SyntheticFeature("after the", 'the word right after "the"', _after_the),
    SyntheticFeature("parentheses", "text inside parentheses", _in_parentheses),
    SyntheticFeature("capitalised", "words that start with a capital letter (names, sentence starts)", _capitalised),
)


@dataclass
class JudgeCheckConfig:
    n: int = 10  # firing and non-firing windows per feature
    window: int = 32
    min_win_rate: float = 0.75
    min_balanced_accuracy: float = 0.65
    max_negative_yes_rate: float = 0.5


def synthetic_examples(rows: Iterable[list[int]], decode: Callable[[int], str], cfg: JudgeCheckConfig,
                       features: tuple[SyntheticFeature, ...] = SYNTHETIC,
                       seed: int = 0) -> dict[str, FeatureExamples]:
    """For each synthetic feature, ``cfg.n`` windows of the corpus where it fires and ``cfg.n`` where it never
    does (drawn at random from the first windows found); a feature the corpus cannot supply is left out."""
    rng = np.random.default_rng(seed)
    firing: dict[str, list[Window]] = {f.name: [] for f in features}
    silent: dict[str, list[Window]] = {f.name: [] for f in features}
    enough = 5 * cfg.n
    index = 0
    for row in rows:
        for lo in range(0, len(row) - cfg.window + 1, cfg.window):
            tokens = np.asarray(row[lo:lo + cfg.window])
            texts = [decode(int(t)) for t in tokens]
            for f in features:
                acts = f.fires(texts).astype(np.float32)
                (firing if acts.any() else silent)[f.name].append(Window(index, tokens, acts, 0 if acts.any() else -1))
            index += 1
        if all(len(firing[f.name]) >= enough and len(silent[f.name]) >= enough for f in features):
            break
    out = {}
    for i, f in enumerate(features):
        if len(firing[f.name]) < cfg.n or len(silent[f.name]) < cfg.n:
            continue
        pick = [firing[f.name][j] for j in rng.choice(len(firing[f.name]), cfg.n, replace=False)]
        neg = [silent[f.name][j] for j in rng.choice(len(silent[f.name]), cfg.n, replace=False)]
        out[f.name] = FeatureExamples(i, [], pick, neg)
    return out


def check_judge(llm: Any, rows: Iterable[list[int]], decode: Callable[[int], str], mode: str,
                cfg: JudgeCheckConfig | None = None, per_prompt: int = 5, seed: int = 0) -> dict[str, Any]:
    """Run the judge check (module docstring) with ``llm`` scoring in ``mode`` (``list`` or ``probability``)."""
    cfg = cfg or JudgeCheckConfig()
    examples = synthetic_examples(rows, decode, cfg, seed=seed)
    if len(examples) < 2:
        raise NotEnoughText(f"the corpus supplies {len(examples)} of the judge check's {len(SYNTHETIC)} synthetic "
                        f"features ({cfg.n} windows of {cfg.window} tokens where each fires and where it does not); "
                        "give more text")
    by_name = {f.name: f for f in SYNTHETIC}
    names = list(examples)
    features, negatives_true = [], []
    for i, name in enumerate(names):
        wrong = by_name[names[(i + 1) % len(names)]]
        true_ans, true_fail = detection(llm, by_name[name].explanation, examples[name], decode, per_prompt,
                                        concurrency=1, seed=seed, mode=mode)
        wrong_ans, _ = detection(llm, wrong.explanation, examples[name], decode, per_prompt, concurrency=1,
                                 seed=seed, mode=mode)
        t, w = binary_metrics(true_ans), binary_metrics(wrong_ans)
        neg = [a for a in true_ans if a.label == 0 and a.prediction is not None]
        negatives_true += neg
        features.append({"feature": name, "explanation": by_name[name].explanation, "wrong": wrong.explanation,
                         "balanced_accuracy": t["balanced_accuracy"], "wrong_balanced_accuracy": w["balanced_accuracy"],
                         "auc": t.get("auc"), "wrong_auc": w.get("auc"), "failed": t["failed"] + w["failed"],
                         "answered": t["n"] + w["n"],
                         "negative_yes_rate": float(np.mean([a.prediction for a in neg])) if neg else None,
                         "true_wins": t["balanced_accuracy"] > w["balanced_accuracy"]})
    judge = getattr(llm, "name", type(llm).__name__)
    if not any(f["answered"] for f in features):  # fallback values are not the judge's answers: say so
        failed = sum(f["failed"] for f in features)
        return {"judge": judge, "scorer": mode, "passed": False, "win_rate": None, "balanced_accuracy": None,
                "negative_yes_rate": None, "features": features, "config": asdict(cfg),
                "unscored": f"none of its {failed} answers could be read"}
    win_rate = float(np.mean([f["true_wins"] for f in features]))
    balanced = float(np.mean([f["balanced_accuracy"] for f in features]))
    yes_neg = float(np.mean([a.prediction for a in negatives_true])) if negatives_true else 1.0
    passed = (win_rate >= cfg.min_win_rate and balanced >= cfg.min_balanced_accuracy
              and yes_neg <= cfg.max_negative_yes_rate)
    return {"judge": judge, "scorer": mode, "passed": passed,
            "win_rate": win_rate, "balanced_accuracy": balanced, "negative_yes_rate": yes_neg,
            "features": features, "config": asdict(cfg)}


def judge_line(check: dict[str, Any] | None) -> str:
    """One line for tables and pages: the judge check's verdict and numbers."""
    if not check:
        return "judge not checked"
    if "skipped" in check:
        return f"judge not checked, its scores unverified ({check['skipped']})"
    if "unscored" in check:
        return f"judge check not scored ({check['unscored']}): its scores unverified"
    verdict = "passed" if check["passed"] else "FAILED: its scores below carry no information"
    return (f"judge check {verdict} (true explanation beats a wrong one on {check['win_rate']:.0%} of "
            f"{len(check['features'])} synthetic features, balanced accuracy {check['balanced_accuracy']:.2f}, "
            f"yes to {check['negative_yes_rate']:.0%} of negatives)")


def judge_flag(check: dict[str, Any] | None) -> str:
    """The mark that follows an LLM score in every table: empty for a judge that passed (or no LLM)."""
    if not check or check["passed"]:
        return ""
    if "unscored" in check:
        return " (judge not scored)"
    return " (judge not checked)" if "skipped" in check else " (judge failed)"


def require_passed(check: dict[str, Any]) -> None:
    if not check["passed"]:
        raise JudgeError(f"{judge_line(check)}; --require-judge stops the run before anything is scored")
