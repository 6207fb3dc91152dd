"""Evaluations run during training, provided by higher layers.

A train config asks for an evaluation by name with ``eval_{name}_every=N`` (e.g. ``eval_chess_every``:
BSP coverage and reconstruction on held-out games every N steps, logged to metrics.csv / .jsonl and
tensorboard like the losses). Training does not import the code that evaluates: a provider registers a
factory with ``register_evaluator``; one named in ``PROVIDERS`` is loaded by module name the first time
a run asks for it, as a plugin would be.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..config import ConfigError

if TYPE_CHECKING:
    from ..model.gpt import GPT
    from .config import TrainConfig


class Evaluator(Protocol):
    """Called with the model (in eval mode, no grad) every ``every`` steps; returns named numbers."""

    every: int
    columns: tuple[str, ...]  # the metric names it returns, for metrics.csv

    def __call__(self, model: GPT) -> dict[str, float]: ...


EvaluatorFactory = Callable[["TrainConfig", Any], "Evaluator"]  # (train config, torch device) -> Evaluator
_FACTORIES: dict[str, EvaluatorFactory] = {}
PROVIDERS = {"chess": "moex.interp.chess_eval"}


def register_evaluator(name: str, factory: EvaluatorFactory) -> None:
    _FACTORIES[name] = factory


def evaluators_for(tcfg: TrainConfig, device: Any) -> list[Evaluator]:
    """The evaluators the config asks for (``eval_{name}_every > 0``)."""
    out = []
    for name, module in PROVIDERS.items():
        if getattr(tcfg, f"eval_{name}_every", 0) > 0:
            if name not in _FACTORIES:
                importlib.import_module(module)
            if name not in _FACTORIES:
                raise ConfigError(f"eval_{name}_every: no evaluator {name!r} is registered by {module}")
            out.append(_FACTORIES[name](tcfg, device))
    return out
