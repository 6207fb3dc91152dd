"""Activation sites: the named places of a model whose features interpretability reads.

A ``Site`` turns a batch of token ids (B, T) into features (B, T, width). It is the seam between models
and metrics: chess scoring, SAE training and (next) auto-interpretation read features only through it,
so a model family plugs in by implementing ``Site`` (e.g. with forward hooks on a Hugging Face MoE whose
layers we do not own) and registering a factory with ``register_site``.

Sites of our ``GPT`` (``site_for(model, spec, layer)``):
- ``mlp``: the wide-sparse code z of the block's MLP (``MLPLayer.code``; for an MoE, M*D gated units);
- ``resid``: the residual stream after the block;
- ``sae:DIR``: the latents of the SAE saved in DIR, on the residual stream after the SAE's layer
  (registered by ``sae.py``).
``collect(site, sequences)`` streams features in chunks, so memory stays bounded by the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..errors import MoexError
from ..model.gpt import GPT


@runtime_checkable
class Site(Protocol):
    """Features of one place of a model: ``features(idx (B, T)) -> (B, T, width)``."""

    name: str
    layer: int
    width: int

    def features(self, idx: Tensor) -> Tensor: ...


def check_layer(model: GPT, layer: int) -> int:
    if not 0 <= layer < model.cfg.n_layer:
        raise MoexError(f"layer {layer} out of range: the model has layers 0..{model.cfg.n_layer - 1}")
    return layer


class MLPCodeSite:
    """The wide-sparse code z of block ``layer``'s MLP: decode(z) is the MLP's output."""

    def __init__(self, model: GPT, layer: int):
        self.model, self.layer = model, check_layer(model, layer)
        self.name, self.width = "mlp", model.cfg.code_width

    def features(self, idx: Tensor) -> Tensor:
        b, t = idx.shape
        return self.model.mlp_code(idx, self.layer, dense=True).reshape(b, t, -1)


class ResidualSite:
    """The residual stream after block ``layer``."""

    def __init__(self, model: GPT, layer: int):
        self.model, self.layer = model, check_layer(model, layer)
        self.name, self.width = "resid", model.cfg.d_model

    def features(self, idx: Tensor) -> Tensor:
        return self.model.residual(idx, self.layer)


class SAESite:
    """Latents of an SAE trained on the residual stream after its layer."""

    def __init__(self, model: GPT, sae: Any, name: str = "sae"):
        if sae.cfg.d_in != model.cfg.d_model:
            raise MoexError(f"the SAE reads {sae.cfg.d_in}-wide residuals; the model's are {model.cfg.d_model}")
        self.model, self.sae, self.layer = model, sae, check_layer(model, sae.cfg.layer)
        self.name, self.width = name, sae.cfg.d_sae

    def features(self, idx: Tensor) -> Tensor:
        return self.sae.encode(self.model.residual(idx, self.layer))


SiteFactory = Callable[[Any, "int | None", str], Site]  # (model, layer or None, argument after ':') -> Site
_SITES: dict[str, SiteFactory] = {}


def register_site(kind: str, factory: SiteFactory) -> None:
    """Make ``site_for(model, "KIND[:ARG]", layer)`` build ``factory(model, layer, ARG)`` (``layer`` None:
    the site's default)."""
    _SITES[kind] = factory


def default_layer(model: GPT) -> int:
    """The paper's evaluated layer: 6 of 8 (0-based, Karvonen's model.transformer.h[6]); 3/4 depth in general."""
    return int(model.cfg.n_layer * 0.75)


register_site("mlp", lambda model, layer, arg: MLPCodeSite(model, default_layer(model) if layer is None else layer))
register_site("resid", lambda model, layer, arg: ResidualSite(model, default_layer(model) if layer is None else layer))


def site_for(model: Any, spec: str | Site = "mlp", layer: int | None = None) -> Site:
    """A ``Site`` from a spec ``KIND`` or ``KIND:ARG`` (``mlp``, ``resid``, ``sae:DIR``, or a registered
    kind); ``layer`` defaults to 3/4 of the depth (an SAE's own layer for ``sae:``). A ``Site`` passes."""
    if isinstance(spec, Site):
        return spec
    if callable(getattr(model, "site", None)):  # a model family with its own sites (e.g. interp.hf_readers.HFModel)
        return model.site(spec, layer)
    kind, _, arg = spec.partition(":")
    if kind not in _SITES:
        raise MoexError(f"unknown site {spec!r}; sites: {', '.join(_SITES)} (sae:DIR)")
    return _SITES[kind](model, layer, arg)


@dataclass
class FeatureChunk:
    """Features of a batch of sequences, padded to the longest: ``mask`` marks the real tokens."""

    index: int  # position of the first sequence of the chunk in the input
    tokens: Tensor  # (B, T) int64
    mask: Tensor  # (B, T) bool
    features: Tensor  # (B, T, width) float32


@torch.no_grad()
def collect(site: Site, sequences: Sequence[Sequence[int] | np.ndarray] | Iterable, batch: int = 32,
            device: str | torch.device = "cpu", length: int | None = None) -> Iterator[FeatureChunk]:
    """Run ``site`` over token sequences in batches of ``batch``, yielding one ``FeatureChunk`` each.
    Batches are padded to the longest sequence, or to ``length`` when given (the same shapes every
    batch)."""
    seqs = list(sequences)
    model = getattr(site, "model", None)
    if isinstance(model, torch.nn.Module):
        model.to(device).eval()
    sae = getattr(site, "sae", None)
    if isinstance(sae, torch.nn.Module):
        sae.to(device).eval()
    for lo in range(0, len(seqs), batch):
        chunk = seqs[lo:lo + batch]
        t = length or max(len(s) for s in chunk)
        ids = np.zeros((len(chunk), t), dtype=np.int64)
        lengths = []
        for i, s in enumerate(chunk):
            ids[i, :len(s)] = s
            lengths.append(len(s))
        idx = torch.from_numpy(ids).to(device)
        mask = torch.arange(t, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
        yield FeatureChunk(lo, idx, mask, site.features(idx).float())


def model_fingerprint(model: Any) -> str:
    """A short hash of a model's configuration and weights (the first 256 values of every tensor): two
    artifacts with the same fingerprint were made from the same model. ``model``: a moex ``GPT`` or a reader
    (its ``.model``)."""
    import hashlib

    net = model if isinstance(model, torch.nn.Module) else model.model
    cfg = getattr(net, "cfg", None) or getattr(net, "config", None)
    cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    h = hashlib.sha256(repr(sorted((k, repr(v)) for k, v in cfg_dict.items()
                                   if not k.startswith("_") and k not in ("dtype", "torch_dtype"))).encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
