"""MoE layer: M experts f_j(x) = W_dec^(j) act(W_enc^(j) x), top-k routing, no token dropping.

Routers (METHODS sec 1):
- ``linear`` (Switch): l = W_g x.
- ``sparsity`` (MoE-X): from the column statistics of each expert's W_enc, l_j = -erf(mu_h / (sqrt2 s_h)),
  a monotone decreasing function of the expected number of active units D * Phi(mu_h / s_h).
  The statistics are not detached, so the gate regularises W_enc towards sparsity.
Gate weights: w = Softmax(TopK(l)). Dispatch sorts the (token, expert) pairs by expert and runs one
grouped matmul per weight matrix (``torch.nn.functional.grouped_mm``, or ``torch._grouped_mm`` on torch
versions without it: ``GROUPED_MM_NAME`` says which), or, on the reference path,
one matmul per contiguous slice. Both give the same result.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from .config import EXPERT_ACTS, ROUTERS, ModelConfig
from .layer import MLPLayer, WideCode, count_params, register_mlp
from .mlp_ops import ACTIVATIONS, sparsity_logits, sparsity_moments


class LinearRouter(nn.Module):
    """Switch router: logits = W_g x."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_g = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)

    def forward(self, x: Tensor, w_enc: Tensor) -> Tensor:
        return self.w_g(x).float()


class SparsityRouter(nn.Module):
    """MoE-X sparsity-aware router. Parameter-free: it reads the experts' encoders."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eps = cfg.router_eps
        self.literal = cfg.router_std == "literal"

    def moments(self, x: Tensor, w_enc: Tensor) -> tuple[Tensor, Tensor]:
        """mu_h and s_h of every expert's pre-activations for each token: two (N, M) tensors.

        ``w_enc`` is (M, d, D); the statistics are over its D columns, once per call (not per token).
        """
        return sparsity_moments(x, w_enc, -1, self.eps, self.literal)

    def forward(self, x: Tensor, w_enc: Tensor) -> Tensor:
        return sparsity_logits(*self.moments(x, w_enc))

    def expected_l0(self, x: Tensor, w_enc: Tensor) -> Tensor:
        """D * Phi(mu_h / s_h): the estimated number of active ReLU units per (token, expert)."""
        mu_h, s_h = self.moments(x, w_enc)
        return w_enc.shape[-1] * 0.5 * (1.0 + torch.erf(mu_h / (math.sqrt(2.0) * s_h)))


def expert_counts(experts: Tensor, n_experts: int) -> Tensor:
    """Occurrences of each expert id, without the device-to-host sync of ``torch.bincount`` on CUDA."""
    flat = experts.reshape(-1)
    return torch.zeros(n_experts, dtype=torch.long, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))


def load_balance_loss(logits: Tensor, coef: float) -> Tensor:
    """Switch load-balance loss: coef * M * sum_i f_i P_i (METHODS sec 1).

    f_i: fraction of tokens whose argmax router probability is expert i; P_i: mean router probability
    (softmax over all experts) of expert i.
    """
    n, m = logits.shape
    probs = torch.softmax(logits.float(), dim=-1)
    f = expert_counts(probs.argmax(dim=-1), m).float() / n
    return coef * m * (f * probs.mean(dim=0)).sum()


def find_grouped_mm() -> tuple[str, Any]:
    """torch's grouped matmul: the public ``torch.nn.functional.grouped_mm`` (newer torch), else the private
    ``torch._grouped_mm`` (torch versions without the public name), else none (the per-expert loop)."""
    if hasattr(F, "grouped_mm"):
        return "torch.nn.functional.grouped_mm", F.grouped_mm
    if hasattr(torch, "_grouped_mm"):
        return "torch._grouped_mm", torch._grouped_mm
    return "loop", None


GROUPED_MM_NAME, GROUPED_MM = find_grouped_mm()
logging.getLogger(__name__).info("MoE grouped matmul: %s", GROUPED_MM_NAME)


def grouped_supported(x: Tensor, *weights: Tensor) -> bool:
    """True where torch's grouped matmul takes these operands: CPU (fp32/bf16) or CUDA bf16, 16-byte rows."""
    if GROUPED_MM is None:
        return False
    if x.device.type == "cuda" and x.dtype != torch.bfloat16:
        return False
    if x.device.type not in ("cpu", "cuda"):
        return False
    if x.dtype != torch.bfloat16 and torch.compiler.is_compiling():
        return False  # the compiled (fake-tensor) grouped_mm accepts bf16 only
    align = 16 // x.element_size()
    return all(w.shape[-1] % align == 0 and w.shape[-2] % align == 0 for w in weights)


def expert_matmul(a: Tensor, w: Tensor, counts: Tensor, grouped: bool) -> Tensor:
    """Rows of ``a`` sorted by expert, ``counts[j]`` rows for expert j: returns a_j @ w[j] stacked."""
    if grouped:
        offs = torch.cumsum(counts, 0).to(torch.int32)
        return GROUPED_MM(a, w.to(a.dtype), offs=offs)
    outs = [part @ w[j].to(a.dtype) for j, part in enumerate(torch.split(a, counts.tolist()))]
    return torch.cat(outs, dim=0)


def check_expert_act(cfg: ModelConfig) -> None:
    if cfg.expert_act not in EXPERT_ACTS:
        raise ConfigError(f"expert_act={cfg.expert_act!r} is not one of {', '.join(EXPERT_ACTS)}")


class MoE(MLPLayer):
    """Mixture of M experts of width D with top-k routing; read as one wide sparse MLP of width M*D."""

    stat_names = ("l0", "entropy", "load_max")

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts = cfg.n_experts
        self.top_k = cfg.moe_top_k
        self.d_expert = self.expert_width(cfg)
        self.router_kind, self.expert_act = cfg.router, cfg.expert_act
        self.act = ACTIVATIONS[cfg.expert_act]
        self.aux_coef = cfg.aux_loss_coef
        self.dispatch = cfg.moe_dispatch
        # (M, d, D) and (M, D, d): the layouts grouped_mm takes as ``x @ w[j]``.
        self.w_enc = nn.Parameter(torch.empty(cfg.n_experts, cfg.d_model, self.d_expert))
        self.w_dec = nn.Parameter(torch.empty(cfg.n_experts, self.d_expert, cfg.d_model))
        self.router = SparsityRouter(cfg) if cfg.router == "sparsity" else LinearRouter(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.w_enc, std=0.02)
        nn.init.normal_(self.w_dec, std=0.02)

    # the contract's class-level facts --------------------------------------------------------------
    @staticmethod
    def expert_width(cfg: ModelConfig) -> int:
        """``d_expert``, or dense width / top-k: activated parameters match the dense model."""
        return cfg.d_expert or cfg.d_mlp // cfg.moe_top_k

    @classmethod
    def code_width(cls, cfg: ModelConfig) -> int:
        return cfg.n_experts * cls.expert_width(cfg)

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        if cfg.router not in ROUTERS:
            raise ConfigError(f"router={cfg.router!r} is not one of {', '.join(ROUTERS)}")
        check_expert_act(cfg)
        if not 1 <= cfg.moe_top_k <= cfg.n_experts:
            raise ConfigError(f"moe_top_k={cfg.moe_top_k} must be in 1..n_experts={cfg.n_experts}")
        if cfg.router_std not in ("sqrt", "literal"):
            raise ConfigError(f"router_std={cfg.router_std!r} must be 'sqrt' or 'literal'")
        if cfg.moe_dispatch not in ("auto", "grouped", "loop"):
            raise ConfigError(f"moe_dispatch={cfg.moe_dispatch!r} must be auto, grouped or loop")

    def param_counts(self) -> tuple[int, int]:
        """Activated: the router and k of the M experts."""
        total = count_params(self)
        expert = self.w_enc.numel() + self.w_dec.numel()
        return total, total - expert + expert * self.top_k // self.n_experts

    def describe(self) -> dict[str, Any]:
        router_params = count_params(self.router)
        return {"n_experts": self.n_experts, "d_expert": self.d_expert, "top_k": self.top_k,
                "router": self.router_kind, "router_params": router_params, "expert_act": self.expert_act,
                "detail": f"{self.n_experts} x {self.d_expert} {self.expert_act} experts, top-{self.top_k}, "
                          f"{self.router_kind} router ({router_params} params)"}

    def stats(self) -> dict[str, Any]:
        s = self.last_stats
        if not s:
            return {}
        load = s["tokens_per_expert"]
        frac = (load / load.sum().clamp_min(1)).tolist()
        return {"l0": round(s["l0"].item(), 3), "entropy": round(s["router_entropy"].item(), 4),
                "load_max": round(max(frac) * len(frac), 4),  # 1.0 = perfectly balanced
                "load": [round(f, 4) for f in frac]}

    # routing ------------------------------------------------------------------------------------
    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, d) -> (logits (N, M), selected experts (N, k), gate weights (N, k))."""
        logits = self.router(x, self.w_enc)
        top, experts = logits.topk(self.top_k, dim=-1)
        return logits, experts, torch.softmax(top, dim=-1)

    def use_grouped(self, x: Tensor) -> bool:
        if self.dispatch == "loop":
            return False
        ok = grouped_supported(x, self.w_enc, self.w_dec)
        if self.dispatch == "grouped" and not ok:
            raise RuntimeError(
                f"moe_dispatch='grouped' is not supported for {x.dtype} on {x.device} with these widths"
            )
        return ok

    def _experts(self, x: Tensor, experts: Tensor, gates: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Sorted dispatch. Returns y (N, d), the hidden units z (N*k, D) and gated z in expert order, ``inv``
        (``z[inv]`` is in slot order: token n's s-th expert at row n*k+s; only the code needs it) and tokens per
        expert."""
        n, k = experts.shape
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = expert_counts(flat, self.n_experts)
        if x.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
            x = x.to(torch.get_autocast_dtype("cuda"))
        grouped = self.use_grouped(x)
        xs = x[order // k]
        z = self.act(expert_matmul(xs, self.w_enc, counts, grouped))
        gated = z * gates.reshape(-1)[order, None].to(z.dtype)
        ys = expert_matmul(gated, self.w_dec, counts, grouped)
        inv = torch.empty_like(order)
        inv[order] = torch.arange(order.numel(), device=order.device)
        y = ys[inv].reshape(n, k, -1).sum(dim=1)
        return y, z, gated, inv, counts

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, d) -> (y (B, T, d), load-balance loss)."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        logits, experts, gates = self.route(x2)
        y, z, _, _, counts = self._experts(x2, experts, gates)  # z in expert order: l0 needs no other
        aux = load_balance_loss(logits, self.aux_coef)
        if self.recording:
            with torch.no_grad():
                probs = torch.softmax(logits.detach(), dim=-1)
                self.record(tokens_per_expert=counts.float(), l0=(z != 0).sum(dim=-1).float().mean(),
                            router_entropy=-(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean(),
                            aux_loss=aux)
        return self.dropout(y.reshape(shape).to(x.dtype)), aux

    # wide-sparse view ----------------------------------------------------------------------------
    def code(self, x: Tensor) -> WideCode:
        x2 = x.reshape(-1, x.shape[-1])
        _, experts, gates = self.route(x2)
        _, _, gated, inv, _ = self._experts(x2, experts, gates)
        return WideCode(gated[inv].reshape(x2.shape[0], self.top_k, self.d_expert), experts, self.n_experts)

    def decode(self, code: WideCode) -> Tensor:
        """y = W_dec z with W_dec the concatenation of the expert decoders."""
        return code.to_dense() @ self.w_dec.reshape(-1, self.w_dec.shape[-1]).to(code.values.dtype)

    # router analysis (paper Fig. 9 and appendix C) -------------------------------------------------
    def router_logits(self, x: Tensor) -> Tensor:
        """Gate logits l (N, M) of tokens x (N, d)."""
        return self.router(x, self.w_enc).float()

    def expected_l0(self, x: Tensor) -> Tensor:
        """D * Phi(mu_h / s_h) (N, M): the sparsity router's estimate of each expert's active units."""
        if not isinstance(self.router, SparsityRouter):
            raise ValueError("expected_l0 needs the sparsity router")
        return self.router.expected_l0(x, self.w_enc)

    def counted_l0(self, x: Tensor) -> Tensor:
        """Active units of every expert (N, M) on tokens x (N, d), routed or not."""
        pre = torch.einsum("nd,mde->nme", x.float(), self.w_enc.float())
        return (self.act(pre) != 0).sum(-1).float()

    @torch.no_grad()
    def router_analysis(self, x: Tensor, sample: int = 4000) -> dict[str, Any]:
        """Pearson r between gate logit and counted l0 over all (token, expert) pairs, and the mean
        counted l0 of the selected experts, on tokens x (N, d); ``sample`` pairs kept for a plot."""
        logits, l0 = self.router_logits(x), self.counted_l0(x)
        _, selected = logits.topk(self.top_k, dim=-1)
        g, c = logits.flatten().cpu().numpy(), l0.flatten().cpu().numpy()
        r = float(np.corrcoef(g, c)[0, 1]) if g.std() > 0 and c.std() > 0 else float("nan")
        return {"router": self.router_kind, "expert_act": self.expert_act, "tokens": int(x.shape[0]),
                "d_expert": self.d_expert, "pearson_r_gate_vs_l0": r,
                "mean_l0_selected": float(l0.gather(1, selected).mean()), "mean_l0_all": float(l0.mean()),
                "sample_gate": g[:sample].tolist(), "sample_l0": c[:sample].tolist()}


register_mlp("moe", MoE, {
    # Switch Transformer baseline: GELU experts, linear router.
    "switch": dict(expert_act="gelu", router="linear", n_experts=8, moe_top_k=2),
    # MoE-X: ReLU experts, sparsity-aware router.
    "moex": dict(expert_act="relu", router="sparsity", n_experts=8, moe_top_k=2),
    # Table 3 ablations.
    "moex-relu-linear": dict(expert_act="relu", router="linear", n_experts=8, moe_top_k=2),
    "moex-gelu-sparsity": dict(expert_act="gelu", router="sparsity", n_experts=8, moe_top_k=2),
    "moe": {},
})
