"""Hugging Face causal LMs (transformers >= 5) read layer by layer: dense MLP hidden units, and for MoE
layers the router's choices and each expert's hidden units on the tokens routed to it.

How each layout is hooked (forward hooks only: the model's own forward runs unchanged):
- MoE, the fused experts layout of transformers 5 (``mlp.experts`` holding ``gate_up_proj`` (E, 2I, d)
  and ``down_proj`` (E, d, I), called as ``experts(x, top_k_index, top_k_weights)``): OLMoE, Qwen2-MoE,
  Qwen3-MoE, Mixtral, DeepSeek-V2/V3, GraniteMoE. A hook on ``mlp.experts`` records its input x, the
  top-k indices and weights and its output; expert e's hidden units on its tokens are
  act(x W_gate^(e)) * (x W_up^(e)), recomputed from the module's weights, so any
  ``experts_implementation`` (eager, grouped_mm, batched_mm) is read the same way. The non-gated variant
  (``up_proj`` (E, I, d) and ``down_proj`` (E, d, I): units act(x W_up^(e))) is read alike: moex models
  exported by ``moex export hf`` (``MoexForCausalLM``, Switch and MoE-X; tested), NemotronH's experts
  (untested). Shared experts (Qwen2-MoE) sit outside ``mlp.experts`` and are not part of the routed reading.
- Dense gated MLP (Llama, OLMo, Qwen, ...: ``gate_proj``, ``up_proj``, ``down_proj``): a hook on
  ``down_proj`` records its input, which is act(gate) * up.
- GPT-2 (``c_fc``, ``c_proj``): a hook on ``c_proj`` records its input, act(W_in x).
gpt-oss (interleaved, clamped SwiGLU with biases) does not fit the fused layout and is refused by name,
as is any class whose MLP matches none of these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..artifacts import read_json
from ..errors import MoexError
from .readers import FusedExperts, LayerCapture, Reader

FUSED_MOE = ("OlmoeForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "MixtralForCausalLM",
             "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "GraniteMoeForCausalLM", "MoexForCausalLM")
DENSE = ("GPT2LMHeadModel", "LlamaForCausalLM", "OlmoForCausalLM", "Olmo2ForCausalLM", "Qwen2ForCausalLM",
         "Qwen3ForCausalLM", "MistralForCausalLM")
SUPPORTED = FUSED_MOE + DENSE


def _unsupported(model: Any, why: str) -> MoexError:
    return MoexError(f"{type(model).__name__}: {why}; supported: {', '.join(SUPPORTED)} "
                     "(and other classes with the same module layout)")


def decoder_layers(model: Any) -> list[Any]:
    for path in ("model.layers", "transformer.h", "model.decoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise _unsupported(model, "no list of decoder layers (model.layers or transformer.h)")


def is_fused_experts(m: Any) -> bool:
    """transformers 5's experts layout: 3-D ``gate_up_proj`` (E, 2I, d) or, non-gated, ``up_proj`` (E, I, d), with
    ``down_proj`` (E, d, I), ``act_fn`` and no biases."""
    up, down = getattr(m, "gate_up_proj", None), getattr(m, "down_proj", None)
    gated = isinstance(up, torch.Tensor)
    if not gated:
        up = getattr(m, "up_proj", None)
    return (isinstance(up, torch.Tensor) and isinstance(down, torch.Tensor) and up.dim() == 3 and down.dim() == 3
            and up.shape[1] == (2 if gated else 1) * down.shape[2] and up.shape[2] == down.shape[1]
            and hasattr(m, "act_fn") and getattr(m, "gate_up_proj_bias", None) is None
            and getattr(m, "up_proj_bias", None) is None)


class HFModel(Reader):
    """A transformers causal LM, its decoder layers found and their MLPs classified (MoE or dense)."""

    def __init__(self, model: Any):
        self.model = model.eval()
        self.name = type(model).__name__
        self.path: Path | None = None  # the directory it was loaded from (its tokenizer)
        if self.name == "GptOssForCausalLM":
            raise _unsupported(model, "gpt-oss experts (interleaved, clamped SwiGLU with biases) do not fit the "
                                      "fused experts layout")
        self.layers = decoder_layers(model)
        self.kinds = [self._kind(i) for i in range(len(self.layers))]
        self.checked: set[int] = set()  # MoE layers whose reading has checked itself

    @property
    def max_len(self) -> int | None:
        config = self.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kw: Any) -> "HFModel":
        from transformers import AutoModelForCausalLM

        loader = AutoModelForCausalLM
        config = Path(path) / "config.json"
        if config.is_file() and read_json(config).get("model_type") == "moex":
            from ..model.modeling_moex import MoexForCausalLM

            loader = MoexForCausalLM  # a moex export: moex's own copy of its code, none of the directory's run
        try:
            model = loader.from_pretrained(str(path), dtype=torch.float32, **kw)
        except (OSError, ValueError) as e:
            raise MoexError(f"{path}: cannot load a Hugging Face causal LM ({str(e).splitlines()[0]})") from None
        hf = cls(model.to(device))
        hf.path = Path(path)
        return hf

    def mlp(self, i: int) -> Any:
        """Layer ``i``'s MLP module (``mlp``; GraniteMoE calls it ``block_sparse_moe``)."""
        layer = self.layers[i]
        return getattr(layer, "mlp", None) or getattr(layer, "block_sparse_moe", None)

    def _kind(self, i: int) -> str:
        mlp = self.mlp(i)
        if mlp is None:
            raise _unsupported(self.model, f"layer {i} has no .mlp (nor .block_sparse_moe)")
        if is_fused_experts(getattr(mlp, "experts", None)):
            return "moe"
        if hasattr(mlp, "experts"):
            raise _unsupported(self.model, f"layer {i}: experts module {type(mlp.experts).__name__} has no known "
                                           "layout")
        if all(hasattr(mlp, a) for a in ("gate_proj", "up_proj", "down_proj")) or \
                all(hasattr(mlp, a) for a in ("c_fc", "c_proj")):
            return "dense"
        raise _unsupported(self.model, f"layer {i}: MLP {type(mlp).__name__} has no known layout")

    def _hook_target(self, layer: int) -> Any:
        mlp = self.mlp(layer)
        if self.kinds[layer] == "moe":
            return mlp.experts
        return mlp.down_proj if hasattr(mlp, "down_proj") else mlp.c_proj

    @torch.no_grad()
    def capture(self, idx: Tensor, layer: int) -> LayerCapture:
        """Run the model on token ids (B, T) and return layer ``layer``'s MLP reading."""
        self.check_layer(layer)
        seen: dict[str, Any] = {}

        def hook(module, args, kwargs, output):
            seen["args"], seen["kwargs"], seen["output"] = args, kwargs, output
            raise _Captured  # the layers above are not needed: stop the forward pass here

        handle = self._hook_target(layer).register_forward_hook(hook, with_kwargs=True)
        try:
            self.model(input_ids=idx.to(self.model.device))
        except _Captured:
            pass
        finally:
            handle.remove()
        if "output" not in seen:
            raise MoexError(f"{self.name}: layer {layer}'s MLP was not called in the forward pass")
        out = seen["output"].reshape(-1, seen["output"].shape[-1])
        if self.kinds[layer] == "dense":
            h = seen["args"][0] if seen["args"] else next(iter(seen["kwargs"].values()))
            return LayerCapture("dense", out, hidden=h.reshape(-1, h.shape[-1]))
        args = list(seen["args"]) + [seen["kwargs"][k] for k in ("hidden_states", "top_k_index", "top_k_weights")
                                     if k in seen["kwargs"]]
        x, index, weights = args[:3]
        cap = LayerCapture("moe", out, x=x.reshape(-1, x.shape[-1]), top_k_index=index, top_k_weights=weights,
                           experts=FusedExperts(self._hook_target(layer)))
        if layer not in self.checked:  # the first reading of each layer checks itself
            cap.check(self.name, layer, rtol=1e-4 if out.dtype == torch.float32 else 2e-2)
            self.checked.add(layer)
        return cap

    def width(self, layer: int) -> int:
        """Features of the ``mlp`` site: hidden units, or experts x units per expert."""
        mlp = self.mlp(layer)
        if self.kinds[layer] == "moe":
            return mlp.experts.down_proj.shape[0] * mlp.experts.down_proj.shape[2]
        proj = mlp.down_proj if hasattr(mlp, "down_proj") else mlp.c_proj
        return proj.in_features if hasattr(proj, "in_features") else proj.weight.shape[0]

    def n_experts(self, layer: int) -> int:
        return self.mlp(layer).experts.down_proj.shape[0] if self.kinds[layer] == "moe" else 1


class _Captured(Exception):
    """Raised by a capture hook once it has what it needs, to end the forward pass early."""


def load_model_or_reader(path: str | Path) -> Any:
    """A moex run directory or a Hugging Face GPT-2 directory as our ``GPT`` (which reads both), any other
    Hugging Face causal LM directory as an ``HFModel``."""
    from ..artifacts import CFG_JSON
    from ..model.gpt import GPT

    p = Path(path)
    if (p / CFG_JSON).exists() or (p / "config.json").is_file() and \
            read_json(p / "config.json").get("model_type") == "gpt2":
        return GPT.from_pretrained(p)
    if not p.exists() and (p.is_absolute() or str(path).startswith(".") or str(path).count("/") != 1):
        # not a directory here, and not of the hub's "owner/name" form either
        raise MoexError(f"{path} not found: give a moex run directory, a Hugging Face model directory, or a "
                        "Hugging Face hub id (owner/name)")
    if p.exists() and not (p / "config.json").is_file():
        raise MoexError(f"{path} is neither a moex run ({CFG_JSON}) nor a Hugging Face model directory (config.json)")
    return HFModel.from_pretrained(p)
