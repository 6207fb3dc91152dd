"""Load GPT-2 weights from a local Hugging Face checkpoint directory into moex's dense ``GPT``.

Reads ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``) directly, so transformers
is not needed. GPT-2 stores its linear layers as Conv1D (in, out): they are transposed here. The model
gets biases, tied embeddings and the tanh GELU (``gelu_new``), so its logits equal GPT-2's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import MoexError
from .config import ModelConfig
from .gpt import GPT

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def is_hf_gpt2(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file() and not (Path(path) / "cfg.json").exists()


def load_hf_gpt2(path: str | Path, map_location: str | torch.device = "cpu") -> GPT:
    path = Path(path)
    hf = json.loads((path / "config.json").read_text())
    if hf.get("model_type") != "gpt2":
        raise MoexError(f"{path / 'config.json'}: model_type {hf.get('model_type')!r}; only gpt2 loads")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
        raise MoexError(f"{path / 'config.json'}: activation_function {act!r} is not supported")
    cfg = ModelConfig(vocab_size=hf["vocab_size"], n_layer=hf["n_layer"], n_head=hf["n_head"],
                      d_model=hf["n_embd"], ctx=hf["n_positions"], bias=True, tie_embeddings=True,
                      mlp="gelu", d_mlp=hf.get("n_inner") or 4 * hf["n_embd"],
                      gelu_approx="none" if act == "gelu" else "tanh",
                      extra={"source": f"huggingface gpt2 checkpoint {path}"})
    if (path / "model.safetensors").exists():
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").exists():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise MoexError(f"{path}: neither model.safetensors nor pytorch_model.bin")
    ours = {}
    for key, value in state.items():
        key = key.removeprefix("transformer.")
        if key.endswith(("attn.bias", "attn.masked_bias")) and value.dim() != 1:
            continue  # causal-mask buffers of older checkpoints
        if key == "lm_head.weight":
            continue  # tied to wte
        if key.endswith(CONV1D):
            value = value.t().contiguous()
        ours[key] = value
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise MoexError(f"{path}: GPT-2 weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(map_location)
