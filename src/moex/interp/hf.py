"""Hugging Face causal LMs (transformers >= 5) read layer by layer: dense MLP hidden units, and for MoE
layers the router's choices and each expert's hidden units on the tokens routed to it.

How each layout is hooked (forward hooks only: the model's own forward runs unchanged):
- MoE, the fused experts layout of transformers 5 (``mlp.experts`` holding ``gate_up_proj`` (E, 2I, d)
  and ``down_proj`` (E, d, I), called as ``experts(x, top_k_index, top_k_weights)``): OLMoE, Qwen2-MoE,
  Qwen3-MoE, Mixtral, DeepSeek-V2/V3, GraniteMoE. A hook on ``mlp.experts`` records its input x, the
  top-k indices and weights and its output; expert e's hidden units on its tokens are
  act(x W_gate^(e)) * (x W_up^(e)), recomputed from the module's weights, so any
  ``experts_implementation`` (eager, grouped_mm, batched_mm) is read the same way. Shared experts
  (Qwen2-MoE) sit outside ``mlp.experts`` and are not part of the routed reading.
- Dense gated MLP (Llama, OLMo, Qwen, ...: ``gate_proj``, ``up_proj``, ``down_proj``): a hook on
  ``down_proj`` records its input, which is act(gate) * up.
- GPT-2 (``c_fc``, ``c_proj``): a hook on ``c_proj`` records its input, act(W_in x).
gpt-oss (interleaved, clamped SwiGLU with biases) does not fit the fused layout and is refused by name,
as is any class whose MLP matches none of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import MoexError

FUSED_MOE = ("OlmoeForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "MixtralForCausalLM",
             "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "GraniteMoeForCausalLM")
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
    gu, down = getattr(m, "gate_up_proj", None), getattr(m, "down_proj", None)
    return (isinstance(gu, torch.Tensor) and isinstance(down, torch.Tensor) and gu.dim() == 3 and down.dim() == 3
            and gu.shape[1] == 2 * down.shape[2] and gu.shape[2] == down.shape[1] and hasattr(m, "act_fn")
            and getattr(m, "gate_up_proj_bias", None) is None)


@dataclass
class LayerCapture:
    """One layer's MLP on N tokens (flattened batch x positions)."""

    kind: str  # "moe" | "dense"
    output: Tensor  # (N, d): the experts module's output (MoE) or the MLP's down projection (dense)
    hidden: Tensor | None = None  # dense: (N, I) hidden units
    x: Tensor | None = None  # MoE: (N, d) the experts' input
    top_k_index: Tensor | None = None  # MoE: (N, k), entries >= n_experts are masked slots
    top_k_weights: Tensor | None = None  # MoE: (N, k)
    experts: Any = None  # MoE: the experts module (weights)

    @property
    def n_experts(self) -> int:
        return self.experts.gate_up_proj.shape[0]

    def expert_tokens(self, e: int) -> tuple[Tensor, Tensor]:
        """(token indices, their top-k slot) routed to expert ``e``."""
        token, slot = torch.where(self.top_k_index == e)
        return token, slot

    def expert_units(self, e: int) -> tuple[Tensor, Tensor]:
        """(token indices, hidden units (n_e, I)) of expert ``e`` on the tokens routed to it."""
        token, _ = self.expert_tokens(e)
        gate, up = torch.nn.functional.linear(self.x[token], self.experts.gate_up_proj[e]).chunk(2, dim=-1)
        return token, self.experts.act_fn(gate) * up

    def expert_output(self, e: int) -> tuple[Tensor, Tensor]:
        """(token indices, expert ``e``'s output before its router weight (n_e, d))."""
        token, units = self.expert_units(e)
        return token, torch.nn.functional.linear(units, self.experts.down_proj[e])

    def router_weights(self) -> Tensor:
        """(N, n_experts): each token's router weight per expert, 0 where not routed."""
        w = torch.zeros(self.x.shape[0], self.n_experts + 1, dtype=self.top_k_weights.dtype,
                        device=self.x.device)
        w.scatter_(1, self.top_k_index.clamp(max=self.n_experts), self.top_k_weights)
        return w[:, :-1]

    def wide_code(self) -> Tensor:
        """(N, n_experts * I): the MoE read as one wide MLP, block e = router weight x expert e's units
        (zero where not routed), as moex reads its own MoE layers."""
        n, units_per = self.x.shape[0], self.experts.down_proj.shape[2]
        z = self.x.new_zeros(n, self.n_experts, units_per)
        w = self.router_weights()
        for e in range(self.n_experts):
            token, units = self.expert_units(e)
            z[token, e] = units * w[token, e, None].to(units.dtype)
        return z.reshape(n, -1)


class HFModel:
    """A transformers causal LM, its decoder layers found and their MLPs classified (MoE or dense)."""

    def __init__(self, model: Any):
        self.model = model.eval()
        self.name = type(model).__name__
        if self.name == "GptOssForCausalLM":
            raise _unsupported(model, "gpt-oss experts (interleaved, clamped SwiGLU with biases) do not fit the "
                                      "fused experts layout")
        self.layers = decoder_layers(model)
        self.kinds = [self._kind(i) for i in range(len(self.layers))]

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kw: Any) -> "HFModel":
        from transformers import AutoModelForCausalLM

        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw)
        except (OSError, ValueError) as e:
            raise MoexError(f"{path}: cannot load a Hugging Face causal LM ({str(e).splitlines()[0]})") from None
        return cls(model.to(device))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise MoexError(f"layer {layer} out of range: {self.name} has layers 0..{self.n_layers - 1}")
        return layer

    def _kind(self, i: int) -> str:
        mlp = getattr(self.layers[i], "mlp", None)
        if mlp is None:
            raise _unsupported(self.model, f"layer {i} has no .mlp")
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
        mlp = self.layers[layer].mlp
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

        handle = self._hook_target(layer).register_forward_hook(hook, with_kwargs=True)
        try:
            self.model(input_ids=idx.to(self.model.device))
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
        return LayerCapture("moe", out, x=x.reshape(-1, x.shape[-1]), top_k_index=index, top_k_weights=weights,
                            experts=self._hook_target(layer))

    def site(self, spec: str = "mlp", layer: int | None = None) -> "HFSite":
        if spec != "mlp":
            raise MoexError(f"site {spec!r}: a Hugging Face model offers the site 'mlp'")
        return HFSite(self, self.check_layer(self.n_layers * 3 // 4 if layer is None else layer))


class HFSite:
    """The ``mlp`` site of a Hugging Face model: dense hidden units, or an MoE's wide code (router weight x
    each expert's units, zero where not routed)."""

    name = "mlp"

    def __init__(self, hf: HFModel, layer: int):
        self.hf, self.layer, self.model = hf, layer, hf.model
        mlp = hf.layers[layer].mlp
        if hf.kinds[layer] == "moe":
            self.width = mlp.experts.gate_up_proj.shape[0] * mlp.experts.down_proj.shape[2]
        else:
            proj = mlp.down_proj if hasattr(mlp, "down_proj") else mlp.c_proj
            self.width = proj.in_features if hasattr(proj, "in_features") else proj.weight.shape[0]

    def features(self, idx: Tensor) -> Tensor:
        b, t = idx.shape
        cap = self.hf.capture(idx, self.layer)
        z = cap.hidden if cap.kind == "dense" else cap.wide_code()
        return z.reshape(b, t, -1)
