"""Parameter counts: total, and activated per token.

Activated = the parameters a token's output is computed from; each MLP kind counts its own
(``MLPLayer.param_counts``): an MoE's router and its k selected experts; all of Monet (every half-expert
is computed for every token, the gates only weight them); PEER's query network, its sub-keys (all are
scored) and the h*k retrieved single-neuron experts.
"""

from __future__ import annotations

from typing import Any

from .config import make_config
from .gpt import GPT
from .layer import count_params


def summarize(model: GPT) -> dict[str, Any]:
    """Total and activated parameter counts and the per-layer layout, as a JSON-able dict. Each MLP
    layer reports its own counts and fields through the MLP-layer contract."""
    cfg = model.cfg
    layers = []
    inactive = 0
    for i, block in enumerate(model.h):
        t, a = block.mlp.param_counts()
        inactive += t - a
        layers.append({
            "layer": i,
            "attn_params": count_params(block.attn) + count_params(block.ln_1) + count_params(block.ln_2),
            "mlp": cfg.mlp,
            "mlp_params": t,
            "mlp_active_params": a,
            "code_width": cfg.code_width,
            **block.mlp.describe(),
        })
    total = count_params(model)  # parameters() yields a tied weight once
    return {
        "config": cfg.to_dict(),
        "total_params": total,
        "active_params": total - inactive,
        "embedding_params": count_params(model.wte) + count_params(model.wpe)
        + (0 if cfg.tie_embeddings else count_params(model.lm_head)),
        "layers": layers,
    }


def summarize_config(preset: str = "chess-8l", mlp: str | None = None, **settings: Any) -> dict[str, Any]:
    """``summarize`` of the model ``make_config(preset, mlp, **settings)`` builds, without allocating it."""
    import torch

    with torch.device("meta"):
        model = GPT(make_config(preset, mlp, **settings))
    return summarize(model)


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
        lines.append(f"{e['layer']:>5} {e['attn_params']:>10,} {e['mlp']:>8} {e['mlp_params']:>12,} "
                     f"{e['mlp_active_params']:>12,} {e['code_width']:>10,}  {e.get('detail', '')}".rstrip())
    return "\n".join(lines)
