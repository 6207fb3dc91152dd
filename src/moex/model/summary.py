"""Parameter counts: total, and activated per token (an MoE activates k of its M experts)."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .config import ModelConfig
from .gpt import GPT
from .moe import MoE


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp_params(mlp: nn.Module) -> tuple[int, int]:
    """(total, activated) parameters of one MLP layer."""
    total = _count(mlp)
    if isinstance(mlp, MoE):
        expert = mlp.w_enc.numel() + mlp.w_dec.numel()
        active = total - expert + expert * mlp.top_k // mlp.n_experts
        return total, active
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
        f"{'layer':>5} {'attn':>10} {'mlp':>6} {'mlp params':>12} {'mlp active':>12} {'code width':>10}  detail",
    ]
    for e in s["layers"]:
        detail = ""
        if "n_experts" in e:
            detail = (f"{e['n_experts']} x {e['d_expert']} {e['expert_act']} experts, top-{e['top_k']}, "
                      f"{e['router']} router ({e['router_params']} params)")
        lines.append(f"{e['layer']:>5} {e['attn_params']:>10,} {e['mlp']:>6} {e['mlp_params']:>12,} "
                     f"{e['mlp_active_params']:>12,} {e['code_width']:>10,}  {detail}")
    return "\n".join(lines)
