"""Model configuration: one dataclass, backbone presets and MLP presets.

A model is a backbone preset (``chess-8l``, ``lm-small``, ``lm-medium``, ``tiny``) plus an MLP preset
(``gelu``, ``switch``, ``moex``, ...) plus ``key=value`` overrides. ``make_config`` joins them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MoexError

MLP_KINDS = ("gelu", "relu", "topk", "geglu", "solu", "moe", "monet-hd", "monet-vd", "peer")
FINE_GRAINED = ("monet-hd", "monet-vd", "peer")
ROUTERS = ("linear", "sparsity")
EXPERT_ACTS = ("relu", "gelu", "relu2")


class ConfigError(MoexError):
    """A configuration that cannot be built: unknown key, preset or value."""


def dataclass_from_dict(cls: type, d: dict[str, Any], source: str, label: str) -> Any:
    """``cls(**d)``, with unknown keys reported as a ``ConfigError`` naming ``source``."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{source}: unknown {label} key(s) {', '.join(unknown)}")
    return cls(**d)


@dataclass
class ModelConfig:
    """Everything that defines a model's shape. Saved as ``cfg.json`` next to the weights."""

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

    def __post_init__(self) -> None:
        self.validate()

    # derived widths -------------------------------------------------------------------------
    @property
    def expert_width(self) -> int:
        if self.mlp in ("monet-hd", "monet-vd") and not self.d_expert:
            # parameter match with the dense MLP (2 d D): experts 2 d E m + router 2 d H E, so E (m + H) = D
            m = self.d_mlp // self.n_experts - self.moe_heads
            return m if self.mlp == "monet-hd" else m // 2 * 2
        return self.d_expert or self.d_mlp // self.moe_top_k

    @property
    def geglu_width(self) -> int:
        return self.geglu_hidden or max(8, int(round(2 * self.d_mlp / 3 / 8)) * 8)

    @property
    def code_width(self) -> int:
        """Number of features in the wide-sparse code of one MLP layer."""
        if self.mlp in ("moe", "monet-hd"):
            return self.n_experts * self.expert_width
        if self.mlp == "geglu":
            return self.geglu_width
        if self.mlp == "monet-vd":
            return 2 * self.n_experts * self.expert_width
        if self.mlp == "peer":
            return self.n_experts
        return self.d_mlp

    def validate(self) -> None:
        if self.mlp not in MLP_KINDS:
            raise ConfigError(f"mlp={self.mlp!r} is not one of {', '.join(MLP_KINDS)}")
        if self.d_model % self.n_head:
            raise ConfigError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.mlp == "moe":
            if self.router not in ROUTERS:
                raise ConfigError(f"router={self.router!r} is not one of {', '.join(ROUTERS)}")
            if self.expert_act not in EXPERT_ACTS:
                raise ConfigError(f"expert_act={self.expert_act!r} is not one of {', '.join(EXPERT_ACTS)}")
            if not 1 <= self.moe_top_k <= self.n_experts:
                raise ConfigError(f"moe_top_k={self.moe_top_k} must be in 1..n_experts={self.n_experts}")
            if self.router_std not in ("sqrt", "literal"):
                raise ConfigError(f"router_std={self.router_std!r} must be 'sqrt' or 'literal'")
            if self.moe_dispatch not in ("auto", "grouped", "loop"):
                raise ConfigError(f"moe_dispatch={self.moe_dispatch!r} must be auto, grouped or loop")
        if self.mlp in FINE_GRAINED:
            self.validate_fine_grained()
        if self.gelu_approx not in ("none", "tanh"):
            raise ConfigError(f"gelu_approx={self.gelu_approx!r} must be 'none' or 'tanh'")
        if self.mlp == "topk" and not 1 <= self.topk_k <= self.d_mlp:
            raise ConfigError(f"topk_k={self.topk_k} must be in 1..d_mlp={self.d_mlp}")

    def validate_fine_grained(self) -> None:
        if self.expert_act not in EXPERT_ACTS:
            raise ConfigError(f"expert_act={self.expert_act!r} is not one of {', '.join(EXPERT_ACTS)}")
        if self.moe_heads < 1:
            raise ConfigError(f"moe_heads={self.moe_heads} must be at least 1")
        if self.mlp == "peer":
            n = math.isqrt(self.n_experts)
            if n * n != self.n_experts:
                raise ConfigError(f"peer needs a square number of experts (n^2 product keys), got {self.n_experts}")
            if not 1 <= self.moe_top_k <= self.n_experts:
                raise ConfigError(f"moe_top_k={self.moe_top_k} must be in 1..n_experts={self.n_experts}")
            if self.d_key < 2 or self.d_key % 2:
                raise ConfigError(f"d_key={self.d_key} must be even (two product-key halves)")
            return
        if not 1 <= self.moe_top_k < self.n_experts:
            raise ConfigError(f"moe_top_k={self.moe_top_k} must be in 1..n_experts-1={self.n_experts - 1}")
        if self.expert_width < 1:
            raise ConfigError(f"{self.mlp}: no expert width is left for d_mlp={self.d_mlp} with "
                              f"n_experts={self.n_experts} and moe_heads={self.moe_heads}; "
                              "lower n_experts or set d_expert")
        if self.mlp == "monet-vd" and (self.expert_width % 2 or self.d_model % 2):
            raise ConfigError(f"monet-vd splits experts and d_model in halves: d_expert={self.expert_width} "
                              f"and d_model={self.d_model} must be even")

    # serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "ModelConfig":
        return dataclass_from_dict(cls, d, source, "model")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))


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

MLP_PRESETS: dict[str, dict[str, Any]] = {
    "gelu": dict(mlp="gelu"),
    "dense": dict(mlp="gelu"),
    "relu": dict(mlp="relu"),
    "topk": dict(mlp="topk"),
    "geglu": dict(mlp="geglu"),
    "solu": dict(mlp="solu"),
    # Switch Transformer baseline: GELU experts, linear router.
    "switch": dict(mlp="moe", expert_act="gelu", router="linear", n_experts=8, moe_top_k=2),
    # MoE-X: ReLU experts, sparsity-aware router.
    "moex": dict(mlp="moe", expert_act="relu", router="sparsity", n_experts=8, moe_top_k=2),
    # Table 3 ablations.
    "moex-relu-linear": dict(mlp="moe", expert_act="relu", router="linear", n_experts=8, moe_top_k=2),
    "moex-gelu-sparsity": dict(mlp="moe", expert_act="gelu", router="sparsity", n_experts=8, moe_top_k=2),
    "moe": dict(mlp="moe"),
    # Fine-grained MoEs (METHODS sec 2), 512 half-experts per set. Monet computes every half-expert for
    # every token, so its activated parameters are all of them: experts (2 d E m, HD and VD alike) plus
    # router (2 d H E) equal the dense MLP's 2 d D when E (m + H) = D. For chess (D = 4096) that is
    # m = 6 with H = 2 heads (METHODS' m = 8 would leave no router). d_expert=0 derives m this way.
    "monet-hd": dict(mlp="monet-hd", n_experts=512, moe_heads=2, moe_top_k=8, expert_act="relu2"),
    "monet-vd": dict(mlp="monet-vd", n_experts=512, moe_heads=2, moe_top_k=8, expert_act="relu2"),
    # PEER over 128^2 single GELU neurons (the total width of MoE-X's 8 x 2048). Activated parameters
    # (query d h d_key, BatchNorm, sub-keys h n d_key, h k retrieved neurons of 2 d) match the dense
    # MLP's 2 d D at h = 32 heads x top-48 with d_key = 128 (4,202,496 vs 4,194,304 for chess); the
    # PEER paper's own setting (N = 1024^2, h = 8, k = 16) is `n_experts=1048576 moe_heads=8 moe_top_k=16`.
    "peer": dict(mlp="peer", n_experts=128 * 128, moe_heads=32, moe_top_k=48, d_key=128, expert_act="gelu"),
}


def parse_value(text: str) -> Any:
    """Parse a ``key=value`` override's value: JSON where it parses, else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def make_config(preset: str = "chess-8l", mlp: str | None = None, **overrides: Any) -> ModelConfig:
    """Backbone preset + MLP preset (or kind) + overrides -> a validated ``ModelConfig``."""
    if preset not in BACKBONES:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(BACKBONES)}")
    d: dict[str, Any] = dict(BACKBONES[preset])
    if mlp is not None:
        if mlp not in MLP_PRESETS:
            raise ConfigError(f"unknown mlp {mlp!r}; choose from: {', '.join(MLP_PRESETS)}")
        d.update(MLP_PRESETS[mlp])
    d.update(overrides)
    return ModelConfig.from_dict(d, source=f"preset {preset!r}")
