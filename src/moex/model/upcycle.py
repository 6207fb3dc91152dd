"""Sparse upcycling (Komatsuzaki et al. 2022): an MoE model initialised from a trained dense model.

Scheme (the papers do not state one; this is ours, tested in tests/test_upcycle.py):
attention, embeddings, LayerNorms and the unembedding are copied. A dense MLP of width D is split into
experts of width D_e, with P = D / D_e parts. Experts come in groups of P; group g draws its own random
permutation of the dense hidden units and cuts it into P parts, expert g*P + p taking part p:
encoder rows copied, decoder columns copied and scaled by P. With weights summing to one over the
selected experts, the upcycled layer is then an unbiased estimate of the dense layer (each unit is in
a selected expert with probability 1/P, scaled by P), and it is exact when P = 1 (every expert a full
copy) or when the router picks one whole group with equal weights. The paper's setting (dense 4096,
8 x 2048, top-2) has P = 2. Dense and expert activations should agree (ReLU dense -> ``moex``, GELU
dense -> ``switch``); a GELU dense model upcycled into ReLU experts also changes the activation.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import ConfigError
from .config import ModelConfig
from .gpt import GPT
from .layer import mlp_presets
from .moe import MoE


def upcycle(dense: GPT, mlp: str = "moex", seed: int = 0, **overrides: Any) -> GPT:
    """Return a new MoE ``GPT`` (mlp preset ``mlp`` + overrides) initialised from ``dense``."""
    src = dense.cfg
    if src.mlp not in ("gelu", "relu"):
        raise ConfigError(f"upcycling needs a gelu or relu dense model, not mlp={src.mlp!r}")
    if src.bias:
        raise ConfigError("upcycling a model with biases is not supported: experts have no biases")
    presets = mlp_presets()
    if mlp not in presets or presets[mlp].get("mlp") != "moe":
        moe_presets = [k for k, v in presets.items() if v.get("mlp") == "moe"]
        raise ConfigError(f"upcycle target {mlp!r} is not an MoE preset; choose from {', '.join(moe_presets)}")
    d = src.to_dict()
    d.update(presets[mlp])
    d.update(overrides)
    d["extra"] = {**src.extra, "upcycled_from_mlp": src.mlp, "upcycle_seed": seed}
    cfg = ModelConfig.from_dict(d, source=f"upcycle to {mlp!r}")
    width = MoE.expert_width(cfg)
    n_parts, rem = divmod(src.d_mlp, width)
    if rem or n_parts < 1:
        raise ConfigError(
            f"dense width {src.d_mlp} is not a multiple of the expert width {width}"
        )

    moe = GPT(cfg).to(next(dense.parameters()).device)
    dense_sd = dense.state_dict()
    moe_sd = moe.state_dict()
    for k, v in dense_sd.items():
        if ".mlp." not in k:
            moe_sd[k].copy_(v)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block_d, block_m in zip(dense.h, moe.h):
            w_fc = block_d.mlp.c_fc.weight  # (D, d)
            w_proj = block_d.mlp.c_proj.weight  # (d, D)
            m = block_m.mlp
            perm = None
            for j in range(cfg.n_experts):
                part = j % n_parts
                if part == 0:
                    perm = torch.randperm(src.d_mlp, generator=gen).to(w_fc.device)
                units = perm[part * width : (part + 1) * width]
                m.w_enc[j].copy_(w_fc[units].T)
                m.w_dec[j].copy_(n_parts * w_proj[:, units].T)
    return moe
