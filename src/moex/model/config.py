"""Model configuration: one dataclass, backbone presets and MLP presets.

A model is a backbone preset (``chess-8l``, ``lm-small``, ``lm-medium``, ``tiny``) plus an MLP preset
(``gelu``, ``switch``, ``moex``, ...; each MLP kind registers its own, see ``layer.py``) plus
``key=value`` overrides. ``make_config`` joins them. Settings of one kind (e.g. the MoE's ``n_experts``)
are checked by that kind's ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..artifacts import read_cfg, write_cfg
from ..config import Config, ConfigError
from .layer import mlp_kind, mlp_presets

ROUTERS = ("linear", "sparsity")
EXPERT_ACTS = ("relu", "gelu", "relu2")


@dataclass
class ModelConfig(Config):
    """Everything that defines a model's shape. Saved as ``cfg.json`` next to the weights."""

    label: ClassVar[str] = "model"

    vocab_size: int = 32
    n_layer: int = 8
    n_head: int = 8
    d_model: int = 512
    ctx: int = 1023
    bias: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.0
    # MLP
    mlp: str = "gelu"
    d_mlp: int = 4096  # dense hidden width D
    topk_k: int = 128  # units kept by the TopK activation
    gelu_approx: str = "none"  # "tanh" for GPT-2's gelu_new (loaded GPT-2 weights)
    geglu_hidden: int = 0  # 0: 2/3 of d_mlp rounded to a multiple of 8 (parameter match)
    # MoE (mlp == "moe")
    n_experts: int = 8
    d_expert: int = 0  # 0: d_mlp // moe_top_k (activated-parameter match with the dense model)
    moe_top_k: int = 2
    expert_act: str = "relu"
    router: str = "sparsity"
    router_std: str = "sqrt"  # "sqrt": s_h = sqrt(var . x^2) (METHODS sec 1); "literal": var . x^2
    router_eps: float = 1e-6
    aux_loss_coef: float = 1e-3
    moe_dispatch: str = "auto"  # "auto" | "grouped" | "loop"
    # Fine-grained MoEs. Monet: n_experts half-experts per set, moe_top_k per head, width d_expert;
    # PEER: n_experts single-neuron experts (a square), moe_top_k per head, query/key width d_key.
    moe_heads: int = 8
    d_key: int = 128
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. upcycling provenance)

    @property
    def code_width(self) -> int:
        """Number of features in the wide-sparse code of one MLP layer."""
        return mlp_kind(self.mlp).cls.code_width(self)

    def validate(self) -> None:
        kind = mlp_kind(self.mlp)
        for key in ("vocab_size", "n_layer", "n_head", "d_model", "ctx", "d_mlp", "topk_k", "n_experts", "moe_top_k",
                    "moe_heads", "d_key"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 1")
        for key in ("geglu_hidden", "d_expert"):  # 0: derived from d_mlp
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 0 (0: derived from d_mlp)")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout={self.dropout}: must be in [0, 1)")
        if self.d_model % self.n_head:
            raise ConfigError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.gelu_approx not in ("none", "tanh"):
            raise ConfigError(f"gelu_approx={self.gelu_approx!r} must be 'none' or 'tanh'")
        kind.cls.validate(self)

    # serialisation ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        write_cfg(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(read_cfg(path), source=str(path))


BACKBONES: dict[str, dict[str, Any]] = {
    # MoE-X paper table 6; dense MLP width 4096 = 8 d (Table 1's parameter match).
    "chess-8l": dict(vocab_size=32, n_layer=8, n_head=8, d_model=512, ctx=1023, d_mlp=4096),
    # paper table 7 (GPT-2 small / medium shapes, 4 d MLPs, GPT-2 vocabulary).
    "lm-small": dict(vocab_size=50257, n_layer=12, n_head=12, d_model=768, ctx=1024, d_mlp=3072),
    "lm-medium": dict(vocab_size=50257, n_layer=24, n_head=16, d_model=1024, ctx=1024, d_mlp=4096),
    # CPU-sized, for tests and the demo. Chess vocabulary, 256-character blocks.
    "tiny": dict(vocab_size=32, n_layer=4, n_head=4, d_model=128, ctx=255, d_mlp=1024, topk_k=64),
    # The same with the GPT-2 vocabulary, for text on a CPU.
    "tiny-lm": dict(vocab_size=50257, n_layer=4, n_head=4, d_model=128, ctx=255, d_mlp=1024, topk_k=64),
}


def make_config(preset: str = "chess-8l", mlp: str | None = None, **overrides: Any) -> ModelConfig:
    """Backbone preset + MLP preset (or kind) + overrides -> a validated ``ModelConfig``."""
    if preset not in BACKBONES:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(BACKBONES)}")
    d: dict[str, Any] = dict(BACKBONES[preset])
    if mlp is not None:
        presets = mlp_presets()
        if mlp not in presets:
            raise ConfigError(f"unknown mlp {mlp!r}; choose from: {', '.join(presets)}")
        d.update(presets[mlp])
    d.update(overrides)
    return ModelConfig.from_dict(d, source=f"preset {preset!r}")
