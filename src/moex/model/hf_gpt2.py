"""Read GPT-2 weights from a local Hugging Face checkpoint directory for moex's dense ``GPT``.

Reads ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``) directly, so transformers
is not needed. GPT-2 stores its linear layers as Conv1D (in, out): they are transposed here. The model
gets biases, tied embeddings and the tanh GELU (``gelu_new``), so its logits equal GPT-2's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts import load_safetensors, read_json
from ..errors import MoexError
from .config import ModelConfig

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def is_hf_gpt2(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file() and not (Path(path) / "cfg.json").exists()


def read_hf_gpt2(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The ``ModelConfig`` and the state dict (our names and layouts) of a GPT-2 checkpoint directory."""
    path = Path(path)
    hf = read_json(path / "config.json")
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
        state = load_safetensors(path / "model.safetensors")
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
    return cfg, ours
