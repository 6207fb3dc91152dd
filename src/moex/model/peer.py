"""PEER (He 2024): product-key retrieval over N = n^2 single-neuron experts.

Expert i is e_i(x) = act(u_i . x) v_i. Each of h heads has a query q = W_q x (after a BatchNorm, as in
PEER) split into halves q1, q2 and its own sub-keys K1, K2 (n keys each). The key of expert (a, b) is
the concatenation [K1_a; K2_b], so its score is q1 . K1_a + q2 . K2_b: the top k of the n^2 scores are
among the k x k sums of each half's top k, which is all the layer scores (product keys, never the n^2
products). Gate weights g = softmax over the head's k scores; y = sum_h sum_k g act(u . x) v.

Wide-sparse code: z in R^N, z_i = sum over the (head, slot) pairs that retrieved expert i of
g * act(u_i . x); y = V^T z. Memory: the output is an ``embedding_bag`` over the retrieved rows of V
(no (tokens, h*k, d) tensor). u_i . x for the retrieved experts comes from one dense x @ U^T when
N <= h*k*d (a transient N per token, cheaper than gathering), else from the gathered rows of U in
chunks of tokens, recomputed in the backward pass, so nothing of size N per token is ever built.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from .config import ModelConfig
from .layer import MLPLayer, WideCode, count_params, register_mlp
from .mlp_ops import ACTIVATIONS, peer_retrieve
from .moe import check_expert_act


GATHER_CHUNK = 4096  # tokens per chunk on the gather path


def _gathered_dots(x: Tensor, u: Tensor, experts: Tensor) -> Tensor:
    return torch.cat([torch.einsum("td,tsd->ts", xc, F.embedding(ec, u))
                      for xc, ec in zip(x.split(GATHER_CHUNK), experts.split(GATHER_CHUNK))])


def retrieved_dots(x: Tensor, u: Tensor, experts: Tensor, gather: bool) -> Tensor:
    """u_i . x for the retrieved experts: x (T, d), u (N, d), experts (T, S) -> (T, S)."""
    if not gather:
        return (x @ u.T).gather(1, experts)
    if torch.is_grad_enabled() and (x.requires_grad or u.requires_grad):
        from torch.utils.checkpoint import checkpoint

        return checkpoint(_gathered_dots, x, u, experts, use_reentrant=False)
    return _gathered_dots(x, u, experts)


class PEER(MLPLayer):
    """Parameter Efficient Expert Retrieval layer with N single-neuron experts, h heads, top-k per head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts, self.heads, self.top_k = cfg.n_experts, cfg.moe_heads, cfg.moe_top_k
        self.expert_act = cfg.expert_act
        self.n_keys = math.isqrt(cfg.n_experts)
        self.d_key = cfg.d_key
        self.act = ACTIVATIONS[cfg.expert_act]
        self.query = nn.Linear(cfg.d_model, self.heads * self.d_key, bias=False)
        self.query_norm = nn.BatchNorm1d(self.heads * self.d_key)
        self.keys = nn.Parameter(torch.empty(2, self.heads, self.n_keys, self.d_key // 2))
        self.u = nn.Parameter(torch.empty(self.n_experts, cfg.d_model))  # expert input weights
        self.v = nn.Parameter(torch.empty(self.n_experts, cfg.d_model))  # expert output weights
        self.dropout = nn.Dropout(cfg.dropout)
        self.gather: bool | None = None  # None: by size (see the module docstring); tests force a path
        nn.init.normal_(self.query.weight, std=0.02)
        nn.init.normal_(self.keys, std=1.0 / math.sqrt(self.d_key))
        nn.init.normal_(self.u, std=0.02)
        nn.init.normal_(self.v, std=0.02)

    @classmethod
    def code_width(cls, cfg: ModelConfig) -> int:
        return cfg.n_experts

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        check_expert_act(cfg)
        if cfg.moe_heads < 1:
            raise ConfigError(f"moe_heads={cfg.moe_heads} must be at least 1")
        n = math.isqrt(cfg.n_experts)
        if n * n != cfg.n_experts:
            raise ConfigError(f"peer needs a square number of experts (n^2 product keys), got {cfg.n_experts}")
        if not 1 <= cfg.moe_top_k <= cfg.n_experts:
            raise ConfigError(f"moe_top_k={cfg.moe_top_k} must be in 1..n_experts={cfg.n_experts}")
        if cfg.d_key < 2 or cfg.d_key % 2:
            raise ConfigError(f"d_key={cfg.d_key} must be even (two product-key halves)")

    def param_counts(self) -> tuple[int, int]:
        """Activated: query network, every sub-key (all are scored), the h*k retrieved neurons."""
        total = count_params(self)
        expert = self.u.numel() + self.v.numel()
        retrieved = self.heads * self.top_k * (self.u.shape[1] + self.v.shape[1])
        return total, total - expert + min(expert, retrieved)

    def describe(self) -> dict[str, Any]:
        router_params = count_params(self.query) + self.keys.numel()
        return {"n_experts": self.n_experts, "d_expert": 1, "heads": self.heads, "top_k": self.top_k,
                "router_params": router_params, "expert_act": self.expert_act,
                "detail": f"{self.n_experts:,} experts of width 1 ({self.expert_act}), {self.heads} heads "
                          f"x top-{self.top_k}, router/keys {router_params:,} params"}

    def retrieve(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, d) -> (experts (N, h*k), gate weights (N, h*k)), head-major."""
        dtype = self.query_norm.running_mean.dtype  # fp32 under autocast: retrieval in full precision
        q = self.query_norm(self.query(x).to(dtype)).reshape(-1, self.heads, self.d_key)
        return peer_retrieve(q, self.keys.to(dtype), self.top_k)

    def _code(self, x: Tensor) -> WideCode:
        experts, gates = self.retrieve(x)
        gather = self.gather if self.gather is not None else \
            self.n_experts > self.heads * self.top_k * x.shape[-1]
        pre = retrieved_dots(x, self.u.to(x.dtype), experts, gather)
        values = gates.to(x.dtype) * self.act(pre)
        return WideCode(values[..., None], experts, self.n_experts)

    def decode(self, code: WideCode) -> Tensor:
        return F.embedding_bag(code.experts, self.v.to(code.values.dtype),
                               per_sample_weights=code.values[..., 0], mode="sum")

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        shape = x.shape
        code = self._code(x.reshape(-1, shape[-1]))
        if self.recording:  # l0: retrieved (head, slot) pairs with a non-zero activation
            with torch.no_grad():
                self.record(l0=(code.values != 0).sum(dim=(1, 2)).float().mean())
        return self.dropout(self.decode(code).reshape(shape)), None

    def code(self, x: Tensor) -> WideCode:
        return self._code(x.reshape(-1, x.shape[-1]))


# PEER over 128^2 single GELU neurons (the total width of MoE-X's 8 x 2048). Activated parameters (query
# d h d_key, BatchNorm, sub-keys h n d_key, h k retrieved neurons of 2 d) match the dense MLP's 2 d D at
# h = 32 heads x top-48 with d_key = 128 (4,202,496 vs 4,194,304 for chess); the PEER paper's own
# setting (N = 1024^2, h = 8, k = 16) is `n_experts=1048576 moe_heads=8 moe_top_k=16`.
register_mlp("peer", PEER, {"peer": dict(n_experts=128 * 128, moe_heads=32, moe_top_k=48, d_key=128,
                                         expert_act="gelu")})
