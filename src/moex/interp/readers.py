"""One reading of an MLP layer for the expert-level analysis, whatever model it comes from.

A reader (``interp.hf_readers.HFModel`` for Hugging Face models, ``MoexReader`` for ours) runs a model on token
ids and returns a ``LayerCapture`` of one layer: a dense MLP's hidden units, or an MoE's input x, its
top-k expert indices and weights and its (routed) output, with the expert weights to recompute each
expert's hidden units on the tokens routed to it. Expert-level activation (METHODS sec 7): router weight
x the L2 norm of the expert's output, 0 where the token is not routed to the expert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MoexError
from ..model.gpt import GPT
from ..model.moe import MoE


class ExpertWeights(Protocol):
    n_experts: int
    units_per_expert: int

    def units(self, e: int, x: Tensor) -> Tensor: ...  # (n, d) -> (n, I): expert e's hidden units

    def down(self, e: int, units: Tensor) -> Tensor: ...  # (n, I) -> (n, d): expert e's output


class FusedExperts:
    """transformers 5's experts: gate_up_proj (E, 2I, d) (or, non-gated, up_proj (E, I, d)), down_proj (E, d, I),
    act_fn."""

    def __init__(self, module: Any):
        self.module = module
        self.gated = isinstance(getattr(module, "gate_up_proj", None), torch.Tensor)
        self.n_experts, self.units_per_expert = module.down_proj.shape[0], module.down_proj.shape[2]

    def units(self, e: int, x: Tensor) -> Tensor:
        if not self.gated:
            return self.module.act_fn(F.linear(x, self.module.up_proj[e]))
        gate_up = F.linear(x, self.module.gate_up_proj[e])
        apply_gate = getattr(self.module, "_apply_gate", None)
        if apply_gate is not None:  # the class's own activation: clamped (DeepSeek-V4), two-argument (Inkling2)
            return apply_gate(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        return self.module.act_fn(gate) * up

    def down(self, e: int, units: Tensor) -> Tensor:
        return F.linear(units, self.module.down_proj[e])


class MoexExperts:
    """A moex ``MoE`` layer: w_enc (M, d, D), w_dec (M, D, d), its expert activation."""

    def __init__(self, moe: MoE):
        self.moe = moe
        self.n_experts, self.units_per_expert = moe.n_experts, moe.d_expert

    def units(self, e: int, x: Tensor) -> Tensor:
        return self.moe.act(x @ self.moe.w_enc[e].to(x.dtype))

    def down(self, e: int, units: Tensor) -> Tensor:
        return units @ self.moe.w_dec[e].to(units.dtype)


@dataclass
class LayerCapture:
    """One layer's MLP on N tokens (flattened batch x positions)."""

    kind: str  # "moe" | "dense"
    output: Tensor  # (N, d): the routed experts' output (MoE) or the MLP's output (dense)
    hidden: Tensor | None = None  # dense: (N, I) hidden units
    x: Tensor | None = None  # MoE: (N, d) the experts' input
    top_k_index: Tensor | None = None  # MoE: (N, k), entries >= n_experts are masked slots
    top_k_weights: Tensor | None = None  # MoE: (N, k)
    experts: ExpertWeights | None = None

    @property
    def n_experts(self) -> int:
        return self.experts.n_experts

    def expert_tokens(self, e: int) -> Tensor:
        """Indices of the tokens routed to expert ``e``, each once (a token routed to it in two slots too)."""
        return torch.where((self.top_k_index == e).any(dim=1))[0]

    def expert_units(self, e: int) -> tuple[Tensor, Tensor]:
        """(token indices, hidden units (n_e, I)) of expert ``e`` on the tokens routed to it (not multiplied
        by the router weight)."""
        token = self.expert_tokens(e)
        return token, self.experts.units(e, self.x[token])

    def expert_output(self, e: int) -> tuple[Tensor, Tensor]:
        """(token indices, expert ``e``'s output before its router weight (n_e, d))."""
        token, units = self.expert_units(e)
        return token, self.experts.down(e, units)

    def router_weights(self) -> Tensor:
        """(N, n_experts): each token's router weight per expert (summed over the slots that chose it, as the
        layer sums their outputs), 0 where not routed."""
        w = torch.zeros(self.x.shape[0], self.n_experts + 1, dtype=self.top_k_weights.dtype, device=self.x.device)
        w.scatter_add_(1, self.top_k_index.clamp(max=self.n_experts), self.top_k_weights)
        return w[:, :-1]

    def routed_output(self) -> Tensor:
        """(N, d): sum over experts of router weight x expert output, recomputed from the expert weights: equal
        to ``output`` when the reading is right (``check``)."""
        out = torch.zeros_like(self.output, dtype=torch.float32)
        w = self.router_weights()
        for e in range(self.n_experts):
            token, y = self.expert_output(e)
            out.index_add_(0, token, (y.float() * w[token, e, None].float()))
        return out

    def check(self, name: str, layer: int, rtol: float = 1e-4) -> None:
        """Raise unless the recomputed routed output equals the layer's own (relative to its scale): a class
        whose experts compute something else (a clamp, another activation) is not read silently wrong."""
        ref = self.output.float()
        err = (self.routed_output() - ref).abs().max().item()
        scale = ref.abs().max().item()
        if not err <= rtol * max(scale, 1e-6):
            raise MoexError(f"{name}: layer {layer}'s experts do not compute what moex recomputes from their weights "
                            f"(max difference {err:.3g} on outputs up to {scale:.3g}); this class cannot be read yet")

    def wide_code(self) -> Tensor:
        """(N, n_experts * I): the MoE read as one wide MLP, block e = router weight x expert e's units (zero
        where not routed), as moex reads its own MoE layers."""
        n = self.x.shape[0]
        z = self.x.new_zeros(n, self.n_experts, self.experts.units_per_expert)
        w = self.router_weights()
        for e in range(self.n_experts):
            token, units = self.expert_units(e)
            z[token, e] = units * w[token, e, None].to(units.dtype)
        return z.reshape(n, -1)

    def expert_activation(self) -> Tensor:
        """(N, n_experts): router weight x ||expert output||_2, 0 where not routed (METHODS sec 7)."""
        act = torch.zeros(self.x.shape[0], self.n_experts, device=self.x.device)
        w = self.router_weights()
        for e in range(self.n_experts):
            token, out = self.expert_output(e)
            act[token, e] = (w[token, e] * out.float().norm(dim=-1)).float()
        return act


class ReaderSite:
    """The ``mlp`` site of a reader: dense hidden units, or an MoE's wide code."""

    name = "mlp"

    def __init__(self, reader: Any, layer: int):
        self.reader, self.layer, self.model = reader, layer, reader.model
        self.width = reader.width(layer)

    def features(self, idx: Tensor) -> Tensor:
        b, t = idx.shape
        cap = self.reader.capture(idx, self.layer)
        z = cap.hidden if cap.kind == "dense" else cap.wide_code()
        return z.reshape(b, t, -1)


class Reader:
    """What the expert-level analysis reads from any model family: ``name``, ``model``, the decoder
    ``layers`` and their ``kinds`` ("moe" | "dense"); subclasses add ``capture(idx, layer)``,
    ``width(layer)`` and ``n_experts(layer)``."""

    name: str
    model: Any
    layers: list
    kinds: list[str]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def max_len(self) -> int | None:
        """The longest token sequence the model takes (None: no limit known)."""
        return None

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise MoexError(f"layer {layer} out of range: {self.name} has layers 0..{self.n_layers - 1}")
        return layer

    def site(self, spec: str = "mlp", layer: int | None = None) -> "ReaderSite":
        """The ``mlp`` site (dense units or the MoE's wide code); ``layer`` defaults to 3/4 of the depth."""
        if spec != "mlp":
            raise MoexError(f"site {spec!r}: {self.name} offers the site 'mlp' through its reader")
        return ReaderSite(self, self.check_layer(self.n_layers * 3 // 4 if layer is None else layer))


class MoexReader(Reader):
    """A moex ``GPT`` read like ``interp.hf_readers.HFModel``: its MoE layers (Switch, MoE-X) by expert, its
    other MLPs by their wide-sparse code."""

    def __init__(self, model: GPT):
        self.model, self.name = model.eval(), f"moex GPT (mlp={model.cfg.mlp})"
        self.layers = list(model.h)
        self.kinds = ["moe" if isinstance(b.mlp, MoE) else "dense" for b in self.layers]

    @property
    def max_len(self) -> int:
        return self.model.cfg.ctx

    def width(self, layer: int) -> int:
        return self.model.cfg.code_width

    def n_experts(self, layer: int) -> int:
        return self.layers[layer].mlp.n_experts if self.kinds[layer] == "moe" else 1

    @torch.no_grad()
    def capture(self, idx: Tensor, layer: int) -> LayerCapture:
        self.check_layer(layer)
        device = next(self.model.parameters()).device
        x = self.model.mlp_input(idx.to(device), layer).reshape(-1, self.model.cfg.d_model)
        mlp = self.layers[layer].mlp
        out = mlp(x)[0]
        if self.kinds[layer] == "dense":
            return LayerCapture("dense", out, hidden=mlp.code(x).to_dense())
        _, experts, gates = mlp.route(x)
        return LayerCapture("moe", out, x=x, top_k_index=experts, top_k_weights=gates, experts=MoexExperts(mlp))


@dataclass
class ExpertWindows:
    """Per expert, its top-scoring windows: a window's score is its max expert-level activation."""

    windows: Tensor  # (W, T) token ids of every window read
    scores: Tensor  # (W, E) max over the window's tokens
    top: dict[int, list[int]]  # expert -> window indices, best first
    activations: dict[int, Tensor]  # expert -> (len(top), T) per-token activation of its top windows


@torch.no_grad()
def top_windows(reader: Any, documents: list[list[int]], layer: int, window: int = 32, top: int = 40,
                batch: int = 16, seed: int = 0) -> ExpertWindows:
    """One random ``window``-token window per document long enough (the reference's sampling, no BOS),
    scored for every expert of ``layer`` by its max expert-level activation; the ``top`` best per expert."""
    reader.check_layer(layer)
    if reader.kinds[layer] != "moe":
        raise MoexError(f"layer {layer} of {reader.name} is not an MoE layer")
    g = torch.Generator().manual_seed(seed)
    wins = []
    for doc in documents:
        if len(doc) >= window:
            start = int(torch.randint(len(doc) - window + 1, (1,), generator=g))
            wins.append(doc[start:start + window])
    if not wins:
        raise MoexError(f"no document has {window} tokens")
    windows = torch.tensor(wins)
    acts = []
    for lo in range(0, len(windows), batch):
        chunk = windows[lo:lo + batch]
        acts.append(reader.capture(chunk, layer).expert_activation().reshape(len(chunk), window, -1).cpu())
    act = torch.cat(acts)  # (W, T, E)
    scores = act.amax(dim=1)
    order = scores.argsort(dim=0, descending=True)[:top]  # (top, E)
    top_idx = {e: order[:, e].tolist() for e in range(scores.shape[1])}
    return ExpertWindows(windows, scores, top_idx, {e: act[idx, :, e] for e, idx in top_idx.items()})
