"""Monet (Park et al. 2024): product-key composition of E x E experts from two sets of E half-experts.

Router (per head h of H, for each of the two sets): logits l = W x (E per head); a BatchNorm without
affine parameters normalises them per head over tokens and experts; a logit survives if its normalised
value reaches min(max over experts, Phi^-1(1 - k/E)) (so about k per head, always at least one), and
g = softmax over the surviving raw logits. Expert (i, j) of head h has weight g1[h, i] * g2[h, j].

- ``monet-hd`` (horizontal): expert (i, j) = V_j act(U_i x). With a = sum_h g2[h, j] sum_i g1[h, i]
  act(U_i x), of width E*m, the output is y = V z: z (indexed by the output half-expert j and unit m)
  is this layer's wide-sparse code.
- ``monet-vd`` (vertical): expert (i, j) = [[V11_i, V12_i], [V21_j, V22_j]] applied to
  [act(U1_i x); act(U2_j x)], each half of width m/2. The output is one block matmul of the four
  gated halves, which together form the code (width 2*E*m).

Differences from the reference (github.com/dmis-lab/Monet, inference code only), stated: one router per
layer (Monet shares one across groups of layers); no routed output bias (the zoo is bias-free by
default); Monet's training losses are not public, so the Switch load-balance loss is applied to each
head's half-expert routing with the model's ``aux_loss_coef``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..config import ConfigError
from .config import ModelConfig
from .layer import MLPLayer, WideCode, count_params, dense_code, register_mlp
from .mlp_ops import ACTIVATIONS, monet_code, monet_decode, monet_gate, monet_threshold
from .moe import check_expert_act, load_balance_loss


class MonetRouter(nn.Module):
    """Two sets of H x E logits, BatchNorm-thresholded, softmax per head: (g1, g2), each (N, H, E)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.n = cfg.moe_heads, cfg.n_experts
        self.w1 = nn.Linear(cfg.d_model, self.heads * self.n, bias=False)
        self.w2 = nn.Linear(cfg.d_model, self.heads * self.n, bias=False)
        self.norm1 = nn.BatchNorm1d(self.heads, affine=False)
        self.norm2 = nn.BatchNorm1d(self.heads, affine=False)
        self.threshold = monet_threshold(cfg.moe_top_k, cfg.n_experts)
        nn.init.normal_(self.w1.weight, std=0.02)
        nn.init.normal_(self.w2.weight, std=0.02)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (N, d) -> g1, g2 (N, H, E) and the raw logits l1, l2 (N, H, E)."""
        dtype = self.norm1.running_mean.dtype  # fp32 under autocast: the router runs in full precision
        l1 = self.w1(x).to(dtype).reshape(-1, self.heads, self.n)
        l2 = self.w2(x).to(dtype).reshape(-1, self.heads, self.n)
        return (monet_gate(l1, self.norm1, self.threshold), monet_gate(l2, self.norm2, self.threshold),
                l1, l2)


class MonetMLP(MLPLayer):
    """Monet-HD or Monet-VD layer with E half-experts per set, expert width m and H routing heads."""

    stat_names = ("l0", "entropy")

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.vertical = cfg.mlp == "monet-vd"
        self.n, self.m, self.heads = cfg.n_experts, self.expert_width(cfg), cfg.moe_heads
        self.top_k, self.expert_act = cfg.moe_top_k, cfg.expert_act
        self.act = ACTIVATIONS[cfg.expert_act]
        self.aux_coef = cfg.aux_loss_coef
        self.router = MonetRouter(cfg)
        d = cfg.d_model
        if self.vertical:
            half = self.n * self.m // 2
            self.u1 = nn.Linear(d, half, bias=cfg.bias)
            self.u2 = nn.Linear(d, half, bias=cfg.bias)
            # rows: output halves (top, bottom); columns: the four gated code blocks.
            self.v = nn.Parameter(torch.empty(4, half, d // 2))
        else:
            self.u = nn.Linear(d, self.n * self.m, bias=cfg.bias)
            self.v = nn.Parameter(torch.empty(self.n * self.m, d))
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.v, std=0.02)

    @staticmethod
    def expert_width(cfg: ModelConfig) -> int:
        """m: ``d_expert``, or the parameter match with the dense MLP (2 d D): experts 2 d E m + router
        2 d H E, so E (m + H) = D (VD: rounded down to even)."""
        if cfg.d_expert:
            return cfg.d_expert
        m = cfg.d_mlp // cfg.n_experts - cfg.moe_heads
        return m if cfg.mlp == "monet-hd" else m // 2 * 2

    @classmethod
    def code_width(cls, cfg: ModelConfig) -> int:
        return (2 if cfg.mlp == "monet-vd" else 1) * cfg.n_experts * cls.expert_width(cfg)

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        check_expert_act(cfg)
        if cfg.moe_heads < 1:
            raise ConfigError(f"moe_heads={cfg.moe_heads} must be at least 1")
        if not 1 <= cfg.moe_top_k < cfg.n_experts:
            raise ConfigError(f"moe_top_k={cfg.moe_top_k} must be in 1..n_experts-1={cfg.n_experts - 1}")
        m = cls.expert_width(cfg)
        if m < 1:
            raise ConfigError(f"{cfg.mlp}: no expert width is left for d_mlp={cfg.d_mlp} with "
                              f"n_experts={cfg.n_experts} and moe_heads={cfg.moe_heads}; "
                              "lower n_experts or set d_expert")
        if cfg.mlp == "monet-vd" and (m % 2 or cfg.d_model % 2):
            raise ConfigError(f"monet-vd splits experts and d_model in halves: d_expert={m} "
                              f"and d_model={cfg.d_model} must be even")

    def describe(self) -> dict[str, Any]:
        router_params = count_params(self.router)
        return {"n_experts": self.n ** 2, "d_expert": self.m, "heads": self.heads, "top_k": self.top_k,
                "router_params": router_params, "expert_act": self.expert_act,
                "detail": f"{self.n ** 2:,} experts of width {self.m} ({self.expert_act}), {self.heads} heads "
                          f"x top-{self.top_k}, router/keys {router_params:,} params"}

    def _code(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, d) -> (z (N, code width), aux loss)."""
        g1, g2, l1, l2 = self.router(x)
        g1, g2 = g1.to(x.dtype), g2.to(x.dtype)
        if self.vertical:
            hidden = tuple(self.act(u(x)).unflatten(-1, (self.n, -1)) for u in (self.u1, self.u2))  # (N, E, m/2)
        else:
            hidden = (self.act(self.u(x)).unflatten(-1, (self.n, -1)),)  # (N, E, m)
        z = monet_code(g1, g2, hidden)
        aux = sum(load_balance_loss(lg[:, h], self.aux_coef) for lg in (l1, l2) for h in range(self.heads))
        if self.recording:
            with torch.no_grad():  # entropy of each head's gate over its half-experts, both sets
                g = torch.stack((g1, g2)).float()
                entropy = -(g * torch.log(g.clamp_min(1e-12))).sum(-1).mean()
                self.record(l0=(z != 0).sum(dim=-1).float().mean(), entropy=entropy)
        return z, aux / self.heads

    def _decode(self, z: Tensor) -> Tensor:
        return monet_decode(z, self.v, self.vertical)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = x.shape
        z, aux = self._code(x.reshape(-1, shape[-1]))
        return self.dropout(self._decode(z).reshape(shape)), aux

    def code(self, x: Tensor) -> WideCode:
        return dense_code(self._code(x.reshape(-1, x.shape[-1]))[0])

    def decode(self, code: WideCode) -> Tensor:
        return self._decode(code.values[:, 0])


register_mlp("monet-hd", MonetMLP, {
    # Monet (METHODS sec 2), 512 half-experts per set. Every half-expert is computed for every token, so
    # its activated parameters are all of them: experts (2 d E m, HD and VD alike) plus router (2 d H E)
    # equal the dense MLP's 2 d D when E (m + H) = D. For chess (D = 4096) that is m = 6 with H = 2
    # heads (METHODS' m = 8 would leave no router). d_expert=0 derives m this way.
    "monet-hd": dict(n_experts=512, moe_heads=2, moe_top_k=8, expert_act="relu2")})
register_mlp("monet-vd", MonetMLP, {"monet-vd": dict(n_experts=512, moe_heads=2, moe_top_k=8, expert_act="relu2")})
