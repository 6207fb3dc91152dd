"""The tensor math of the MLP kinds, as plain functions of tensors (torch only, no moex import).

moex's own layers (``mlp.py``, ``moe.py``, ``monet.py``, ``peer.py``) and the transformers modeling code
that ``moex export hf`` writes (``modeling_moex.py``, which ships this file beside it) both compute with
these functions, so an exported model computes what the moex model computes by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import Tensor


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


def dense_hidden(kind: str, pre: Tensor, topk_k: int, gelu_approx: str) -> Tensor:
    """Hidden units of a dense MLP of ``kind`` from its pre-activations (SoLU: before its LayerNorm)."""
    if kind == "gelu":
        return F.gelu(pre, approximate=gelu_approx)
    if kind == "relu":
        return F.relu(pre)
    if kind == "topk":
        return topk_activation(pre, topk_k)
    if kind == "solu":
        return solu(pre)
    raise ValueError(f"dense MLP kind {kind!r} is not one of gelu, relu, topk, solu")


ENCODER_STATS = "_moex_encoder_stats"  # the attribute of an encoder tensor that holds its cached statistics
CACHE_ENCODER_STATS = True  # False: recompute them on every call (benchmarks/peers.py times both)


def encoder_stats(w_enc: Tensor, unit_dim: int) -> tuple[Tensor, Tensor]:
    """Mean and variance (M, d) of each expert's encoder over its hidden units (dimension ``unit_dim``).

    Where no gradient can flow (``torch.no_grad``, evaluation, generation, every reader) they are kept on the
    weight tensor (an attribute, so they go with it) and reused while its version counter is unchanged: an
    optimizer step or a weight load writes the tensor in place, which bumps the counter, and the next call
    computes them again. A decoding step then costs the router two matrix products instead of a pass over
    every encoder."""
    cacheable = CACHE_ENCODER_STATS and not (torch.is_grad_enabled() and w_enc.requires_grad)
    key = (w_enc._version, unit_dim, w_enc.device, w_enc.dtype)
    if cacheable:
        hit = getattr(w_enc, ENCODER_STATS, None)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
    w = w_enc.float()
    mu, var = w.mean(dim=unit_dim), w.var(dim=unit_dim, unbiased=False)
    if cacheable:
        setattr(w_enc, ENCODER_STATS, (key, mu, var))
    return mu, var


def sparsity_moments(x: Tensor, w_enc: Tensor, unit_dim: int, eps: float, literal: bool) -> tuple[Tensor, Tensor]:
    """mu_h = x . mu_j and s_h = sqrt(x^2 . var_j + eps) (``literal``: without the root) per token and expert: two
    (N, M) tensors from x (N, d) and the experts' encoders ``w_enc`` (M experts; mu_j and var_j (d,) are the mean and
    variance of expert j's encoder over its hidden units, dimension ``unit_dim``; ``encoder_stats``)."""
    mu, var = encoder_stats(w_enc, unit_dim)  # (M, d) each
    x = x.float()
    mu_h = x @ mu.T
    s2 = (x * x) @ var.T
    return mu_h, (s2 + eps if literal else torch.sqrt(s2 + eps))


def sparsity_logits(mu_h: Tensor, s_h: Tensor) -> Tensor:
    """MoE-X gate logits -erf(mu_h / (sqrt2 s_h)): decreasing in the expected fraction of active ReLU units."""
    return -torch.erf(mu_h / (math.sqrt(2.0) * s_h))


def product_key_topk(q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of s[a, b] = q1 . k1[a] + q2 . k2[b] over all n^2 pairs, per (token, head).

    q1, q2: (N, h, d_k/2); k1, k2: (h, n, d_k/2). Returns scores (N, h, k) and flat indices a*n + b.
    """
    n = k1.shape[1]
    kk = min(k, n)
    s1 = torch.einsum("thc,hac->tha", q1, k1)
    s2 = torch.einsum("thc,hbc->thb", q2, k2)
    v1, i1 = s1.topk(kk, dim=-1)
    v2, i2 = s2.topk(kk, dim=-1)
    cand = (v1[..., :, None] + v2[..., None, :]).flatten(-2)  # (N, h, kk*kk)
    scores, pos = cand.topk(k, dim=-1)
    a = i1.gather(-1, pos // kk)
    b = i2.gather(-1, pos % kk)
    return scores, a * n + b


def peer_retrieve(q: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """PEER's retrieval: normalised queries q (N, h, d_k) and sub-keys (2, h, n, d_k/2) -> the experts
    (N, h*k) and their gate weights (softmax over each head's k scores), head-major."""
    q1, q2 = q.chunk(2, dim=-1)
    scores, experts = product_key_topk(q1, q2, keys[0], keys[1], k)
    return experts.flatten(1), torch.softmax(scores, dim=-1).flatten(1)


def monet_threshold(top_k: int, n_experts: int) -> float:
    """Phi^-1(1 - k/E): the normalised logit above which about k of a head's E half-experts survive."""
    return NormalDist().inv_cdf(1.0 - top_k / n_experts)


def monet_gate(logits: Tensor, norm: Callable[[Tensor], Tensor], threshold: float) -> Tensor:
    """Monet's gate of one set of half-experts from its raw logits (N, H, E): ``norm`` (a BatchNorm with one
    channel per head) normalises them over tokens and experts; softmax over the raw logits of those whose
    normalised value reaches min(its head's max, ``threshold``)."""
    n, heads, experts = logits.shape
    normed = norm(logits.transpose(1, 2).reshape(-1, heads)).reshape(n, experts, heads).transpose(1, 2)
    cut = normed.amax(dim=-1, keepdim=True).clamp_max(threshold)
    return torch.softmax(logits.masked_fill(normed < cut, float("-inf")), dim=-1)


def monet_code(g1: Tensor, g2: Tensor, hidden: tuple[Tensor, ...]) -> Tensor:
    """Monet's wide code z (N, width) from the gates g1, g2 (N, H, E) and the half-experts' activations:
    ``(h,)`` (N, E, m) for HD, ``(h1, h2)`` (N, E, m/2) each for VD (see ``monet.py``)."""
    if len(hidden) == 1:
        a = torch.einsum("nhi,nim->nhm", g1, hidden[0])
        return torch.einsum("nhj,nhm->njm", g2, a).flatten(1)
    h1, h2 = hidden
    a1 = torch.einsum("nhi,nim->nhm", g1, h1)  # head-wise sums over the selected half-experts
    a2 = torch.einsum("nhj,njm->nhm", g2, h2)
    blocks = (
        torch.einsum("nhi,nim->nim", g1, h1),  # V11_i act(U1_i x), weight g1_i
        torch.einsum("nhi,nhm->nim", g1, a2),  # V12_i (sum_j g2_j act(U2_j x)), weight g1_i
        torch.einsum("nhj,nhm->njm", g2, a1),  # V21_j (sum_i g1_i act(U1_i x)), weight g2_j
        torch.einsum("nhj,njm->njm", g2, h2),  # V22_j act(U2_j x), weight g2_j
    )
    return torch.cat([b.flatten(1) for b in blocks], dim=-1)


def monet_decode(z: Tensor, v: Tensor, vertical: bool) -> Tensor:
    """y = V z: HD's v is (E*m, d); VD's v is (4, E*m/2, d/2), the four code blocks onto two output halves."""
    v = v.to(z.dtype)
    if not vertical:
        return z @ v
    b = z.unflatten(-1, (4, -1))
    return torch.cat((b[:, 0] @ v[0] + b[:, 1] @ v[1], b[:, 2] @ v[2] + b[:, 3] @ v[3]), dim=-1)
