"""Dense MLPs of the MoE-X paper's Table 1 (GELU, ReLU, TopK, GEGLU, SoLU) and the wide-sparse code.

Every MLP (dense or MoE) exposes ``code(x) -> WideCode``, the features the interpretability metrics
read, and ``decode(code)``, with ``decode(code(x)) == forward(x)``: the layer output is W_dec z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

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


def relu2(x: Tensor) -> Tensor:
    """Squared ReLU, Monet's default activation."""
    return F.relu(x).square()


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "relu2": relu2}  # expert activations (cfg.expert_act)


def topk_activation(pre: Tensor, k: int) -> Tensor:
    """ReLU(TopK(pre)): keep the k largest pre-activations of each row, zero the rest (Gao et al.)."""
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))


def solu(pre: Tensor) -> Tensor:
    """SoLU before its LayerNorm: x * softmax(x) over the hidden units."""
    return pre * torch.softmax(pre, dim=-1)


class DenseMLP(nn.Module):
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
        pre = self.c_fc(x)
        if self.kind == "gelu":
            return F.gelu(pre, approximate=self.gelu_approx)
        if self.kind == "relu":
            return F.relu(pre)
        if self.kind == "topk":
            return topk_activation(pre, self.topk_k)
        if self.kind == "solu":
            return self.ln(solu(pre))
        raise AssertionError(self.kind)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.dropout(self.c_proj(self.hidden(x))), None

    def code(self, x: Tensor) -> WideCode:
        return dense_code(self.hidden(x.reshape(-1, x.shape[-1])))

    def decode(self, code: WideCode) -> Tensor:
        return self.c_proj(code.values[:, 0])


class GegluMLP(nn.Module):
    """GEGLU: (GELU(x W_gate) * (x W_in)) W_out, hidden 2/3 of the dense width by default."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.geglu_width
        self.w_gate = nn.Linear(cfg.d_model, h, bias=cfg.bias)
        self.w_in = nn.Linear(cfg.d_model, h, bias=cfg.bias)
        self.c_proj = nn.Linear(h, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def hidden(self, x: Tensor) -> Tensor:
        return F.gelu(self.w_gate(x)) * self.w_in(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.dropout(self.c_proj(self.hidden(x))), None

    def code(self, x: Tensor) -> WideCode:
        return dense_code(self.hidden(x.reshape(-1, x.shape[-1])))

    def decode(self, code: WideCode) -> Tensor:
        return self.c_proj(code.values[:, 0])


def build_mlp(cfg: ModelConfig) -> nn.Module:
    if cfg.mlp == "moe":
        from .moe import MoE

        return MoE(cfg)
    if cfg.mlp == "geglu":
        return GegluMLP(cfg)
    if cfg.mlp in ("monet-hd", "monet-vd"):
        from .monet import MonetMLP

        return MonetMLP(cfg)
    if cfg.mlp == "peer":
        from .peer import PEER

        return PEER(cfg)
    return DenseMLP(cfg)
