"""The MLP-layer contract and the registry of MLP kinds.

Every MLP layer (dense, MoE, Monet, PEER, or one a user adds) is an ``MLPLayer``:
- ``forward(x (B, T, d)) -> (y (B, T, d), aux loss or None)``;
- ``code(x) -> WideCode``: the features z the interpretability metrics read, and ``decode(z)`` the
  layer output from them, so ``decode(code(x)) == forward(x)[0]`` (the layer is W_dec z);
- ``code_width(cfg)``: the number of features; ``param_counts()``: (total, activated per token);
- ``stats()``: per-layer statistics of the last forward pass, logged by the trainer as ``l{i}_{name}``
  for each name in ``stat_names``; ``describe()``: extra fields of ``moex model summary``.
Adding a kind is one file: subclass ``MLPLayer`` and call ``register_mlp("name", Class, presets)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn
from torch import Tensor

from ..config import ConfigError

if TYPE_CHECKING:
    from .config import ModelConfig


@dataclass
class WideCode:
    """The code z of one MLP layer for N tokens, stored sparsely by expert.

    ``values[n, s]`` is w_j * z^(j) (gate weight times the expert's hidden units, length D) for the
    expert ``j = experts[n, s]``; every other expert's block of z is zero. A dense MLP is the case of one
    expert with weight 1, so its code is simply its hidden units. ``to_dense()`` gives z in R^{M*D},
    expert j occupying columns j*D .. (j+1)*D-1.
    """

    values: Tensor  # (N, k, D)
    experts: Tensor  # (N, k) int64
    n_experts: int

    @property
    def width(self) -> int:
        return self.n_experts * self.values.shape[-1]

    def to_dense(self) -> Tensor:
        n, k, d = self.values.shape
        out = self.values.new_zeros(n, self.n_experts, d)
        out.scatter_add_(1, self.experts[..., None].expand(n, k, d), self.values)  # PEER heads may repeat
        return out.reshape(n, self.n_experts * d)

    def l0(self) -> Tensor:
        """Number of non-zero features per token."""
        return (self.values != 0).sum(dim=(1, 2))


def dense_code(hidden: Tensor) -> WideCode:
    n = hidden.shape[0]
    return WideCode(hidden[:, None, :], hidden.new_zeros(n, 1, dtype=torch.long), 1)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class MLPLayer(nn.Module):
    """Base class of every MLP kind (see the module docstring for the contract)."""

    stat_names: ClassVar[tuple[str, ...]] = ("l0",)

    def __init__(self) -> None:
        super().__init__()
        self.track_stats = True
        self.last_stats: dict[str, Tensor] = {}

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def code(self, x: Tensor) -> WideCode:
        raise NotImplementedError

    def decode(self, code: WideCode) -> Tensor:
        raise NotImplementedError

    @classmethod
    def code_width(cls, cfg: ModelConfig) -> int:
        return cfg.d_mlp

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        """Raise ``ConfigError`` for settings this kind cannot build."""

    def param_counts(self) -> tuple[int, int]:
        """(total, activated per token) parameters of the layer; dense: all are activated."""
        total = count_params(self)
        return total, total

    def describe(self) -> dict[str, Any]:
        """Kind-specific fields of the parameter summary; ``detail`` is its one-line description."""
        return {}

    @property
    def recording(self) -> bool:
        """Whether this forward pass keeps statistics: ``track_stats`` on and gradients enabled (training); never
        in evaluation, generation or capture passes, which run under ``torch.no_grad``."""
        return self.track_stats and torch.is_grad_enabled()

    def record(self, **stats: Tensor) -> None:
        """Keep detached statistics of this forward pass (cheap tensors; read at log time only). Callers compute
        them only when ``recording``."""
        if self.track_stats:
            self.last_stats = {k: v.detach() for k, v in stats.items()}

    def record_l0(self, hidden: Tensor) -> None:
        if self.recording:
            with torch.no_grad():
                self.record(l0=(hidden != 0).sum(dim=-1).float().mean())

    def stats(self) -> dict[str, Any]:
        """Python numbers from the last forward pass: every name of ``stat_names`` (and any extras)."""
        return {k: round(v.item(), 4) if v.numel() == 1 else [round(x, 4) for x in v.tolist()]
                for k, v in self.last_stats.items()}


@dataclass(frozen=True)
class MLPKind:
    name: str
    cls: type[MLPLayer]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # preset name -> config values


_KINDS: dict[str, MLPKind] = {}


def unregister_mlp(name: str) -> None:
    """Remove MLP kind ``name`` (and its presets) from the registry; a kind that is not registered is an error."""
    if name not in _KINDS:
        raise KeyError(f"MLP kind {name!r} is not registered")
    del _KINDS[name]


def register_mlp(name: str, cls: type[MLPLayer], presets: dict[str, dict[str, Any]] | None = None) -> MLPKind:
    """Make ``cls`` the MLP of ``mlp=name``. ``presets`` name config values for ``make_config(.., mlp=PRESET)``
    (default: one preset ``name``); each preset gets ``mlp=name`` unless it says otherwise."""
    if not (isinstance(cls, type) and issubclass(cls, MLPLayer)):
        raise TypeError(f"MLP kind {name!r}: {cls!r} is not a subclass of MLPLayer")
    presets = {k: {"mlp": name, **v} for k, v in (presets or {name: {}}).items()}
    taken = {p for k in _KINDS.values() if k.name != name for p in k.presets}
    if taken & set(presets):
        raise ValueError(f"MLP kind {name!r}: preset(s) {sorted(taken & set(presets))} are already registered")
    kind = MLPKind(name, cls, presets)
    _KINDS[name] = kind
    return kind


def mlp_kind(name: str) -> MLPKind:
    if name not in _KINDS:
        raise ConfigError(f"mlp={name!r} is not one of {', '.join(_KINDS)}")
    return _KINDS[name]


def mlp_kinds() -> dict[str, MLPKind]:
    return dict(_KINDS)


def mlp_presets() -> dict[str, dict[str, Any]]:
    """Every registered MLP preset, in registration order."""
    return {p: v for k in _KINDS.values() for p, v in k.presets.items()}


def build_mlp(cfg: ModelConfig) -> MLPLayer:
    return mlp_kind(cfg.mlp).cls(cfg)
