"""Parameter counts: total, and activated per token.

Activated = the parameters a token's output is computed from: an MoE's router and its k selected
experts; all of Monet (every half-expert is computed for every token, the gates only weight them);
PEER's query network, its sub-keys (all are scored) and the h*k retrieved single-neuron experts.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .config import ModelConfig
from .gpt import GPT
from .moe import MoE
from .peer import PEER


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp_params(mlp: nn.Module) -> tuple[int, int]:
    """(total, activated) parameters of one MLP layer."""
    total = _count(mlp)
    if isinstance(mlp, MoE):
        expert = mlp.w_enc.numel() + mlp.w_dec.numel()
        active = total - expert + expert * mlp.top_k // mlp.n_experts
        return total, active
    if isinstance(mlp, PEER):
        expert = mlp.u.numel() + mlp.v.numel()
        retrieved = mlp.heads * mlp.top_k * (mlp.u.shape[1] + mlp.v.shape[1])
        return total, total - expert + min(expert, retrieved)
    return total, total


def summarize(model: GPT) -> dict[str, Any]:
    """Total and activated parameter counts and the per-layer layout, as a JSON-able dict."""
    cfg: ModelConfig = model.cfg
    layers = []
    inactive = 0
    for i, block in enumerate(model.h):
        t, a = mlp_params(block.mlp)
        inactive += t - a
        entry: dict[str, Any] = {
            "layer": i,
            "attn_params": _count(block.attn) + _count(block.ln_1) + _count(block.ln_2),
            "mlp": cfg.mlp,
            "mlp_params": t,
            "mlp_active_params": a,
            "code_width": cfg.code_width,
        }
        if isinstance(block.mlp, MoE):
            entry.update(
                n_experts=block.mlp.n_experts,
                d_expert=block.mlp.d_expert,
                top_k=block.mlp.top_k,
                router=cfg.router,
                router_params=_count(block.mlp.router),
                expert_act=cfg.expert_act,
            )
        elif cfg.mlp in ("monet-hd", "monet-vd", "peer"):
            entry.update(
                n_experts=cfg.n_experts if cfg.mlp == "peer" else cfg.n_experts ** 2,
                d_expert=1 if cfg.mlp == "peer" else cfg.expert_width,
                heads=cfg.moe_heads,
                top_k=cfg.moe_top_k,
                router_params=_count(block.mlp.router) if cfg.mlp != "peer"
                else _count(block.mlp.query) + block.mlp.keys.numel(),
                expert_act=cfg.expert_act,
            )
        layers.append(entry)
    total = _count(model)  # parameters() yields a tied weight once
    return {
        "config": cfg.to_dict(),
        "total_params": total,
        "active_params": total - inactive,
        "embedding_params": _count(model.wte) + _count(model.wpe)
        + (0 if cfg.tie_embeddings else _count(model.lm_head)),
        "layers": layers,
    }


def format_summary(s: dict[str, Any]) -> str:
    cfg = s["config"]
    lines = [
        f"backbone: {cfg['n_layer']} layers, {cfg['n_head']} heads, d {cfg['d_model']}, ctx {cfg['ctx']}, "
        f"vocab {cfg['vocab_size']}, mlp {cfg['mlp']}",
        f"total params:     {s['total_params']:,}",
        f"activated params: {s['active_params']:,}",
        f"embedding params: {s['embedding_params']:,}",
        "",
        f"{'layer':>5} {'attn':>10} {'mlp':>8} {'mlp params':>12} {'mlp active':>12} {'code width':>10}  detail",
    ]
    for e in s["layers"]:
        detail = ""
        if "heads" in e:
            detail = (f"{e['n_experts']:,} experts of width {e['d_expert']} ({e['expert_act']}), "
                      f"{e['heads']} heads x top-{e['top_k']}, router/keys {e['router_params']:,} params")
        elif "n_experts" in e:
            detail = (f"{e['n_experts']} x {e['d_expert']} {e['expert_act']} experts, top-{e['top_k']}, "
                      f"{e['router']} router ({e['router_params']} params)")
        lines.append(f"{e['layer']:>5} {e['attn_params']:>10,} {e['mlp']:>8} {e['mlp_params']:>12,} "
                     f"{e['mlp_active_params']:>12,} {e['code_width']:>10,}  {detail}")
    return "\n".join(lines)
