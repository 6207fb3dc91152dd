"""Dense MLPs of the MoE-X paper's Table 1 (GELU, ReLU, TopK, GEGLU, SoLU) and the wide-sparse code.

Each is an ``MLPLayer`` (see ``layer.py``): ``code(x)`` is its hidden units, ``decode`` multiplies them by
W_out, so ``decode(code(x)) == forward(x)``.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from .config import ModelConfig
from .layer import MLPLayer, WideCode, dense_code, register_mlp
from .mlp_ops import dense_hidden


class DenseMLP(MLPLayer):
    """GPT-2 MLP with a chosen activation: gelu, relu, topk or solu (SoLU adds a LayerNorm)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.mlp
        self.topk_k = cfg.topk_k
        self.gelu_approx = cfg.gelu_approx
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.bias)
        self.ln = nn.LayerNorm(cfg.d_mlp, bias=cfg.bias) if cfg.mlp == "solu" else None
        self.dropout = nn.Dropout(cfg.dropout)

    def hidden(self, x: Tensor) -> Tensor:
        h = dense_hidden(self.kind, self.c_fc(x), self.topk_k, self.gelu_approx)
        return self.ln(h) if self.ln is not None else h

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        if cfg.mlp == "topk" and not 1 <= cfg.topk_k <= cfg.d_mlp:
            raise ConfigError(f"topk_k={cfg.topk_k} must be in 1..d_mlp={cfg.d_mlp}")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.hidden(x)
        self.record_l0(h)
        return self.dropout(self.c_proj(h)), None

    def code(self, x: Tensor) -> WideCode:
        return dense_code(self.hidden(x.reshape(-1, x.shape[-1])))

    def decode(self, code: WideCode) -> Tensor:
        return self.c_proj(code.values[:, 0])


class GegluMLP(MLPLayer):
    """GEGLU: (GELU(x W_gate) * (x W_in)) W_out, hidden 2/3 of the dense width by default."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = self.code_width(cfg)
        self.w_gate = nn.Linear(cfg.d_model, h, bias=cfg.bias)
        self.w_in = nn.Linear(cfg.d_model, h, bias=cfg.bias)
        self.c_proj = nn.Linear(h, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    @classmethod
    def code_width(cls, cfg: ModelConfig) -> int:
        """``geglu_hidden``, or 2/3 of the dense width rounded to a multiple of 8 (parameter match)."""
        return cfg.geglu_hidden or max(8, int(round(2 * cfg.d_mlp / 3 / 8)) * 8)

    def hidden(self, x: Tensor) -> Tensor:
        return F.gelu(self.w_gate(x)) * self.w_in(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.hidden(x)
        self.record_l0(h)
        return self.dropout(self.c_proj(h)), None

    def code(self, x: Tensor) -> WideCode:
        return dense_code(self.hidden(x.reshape(-1, x.shape[-1])))

    def decode(self, code: WideCode) -> Tensor:
        return self.c_proj(code.values[:, 0])


register_mlp("gelu", DenseMLP, {"gelu": {}, "dense": {}})
register_mlp("relu", DenseMLP)
register_mlp("topk", DenseMLP)
register_mlp("geglu", GegluMLP)
register_mlp("solu", DenseMLP)
