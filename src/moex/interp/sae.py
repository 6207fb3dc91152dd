"""Sparse-autoencoder baseline on the residual stream ("post-res" after a block), METHODS sec 2.

Kinds: ``topk`` (Gao et al. 2024: z = TopK(W_enc (x - b_dec) + b_enc), unit-norm decoder rows, auxiliary
loss that reconstructs the residual error from the k_aux largest dead latents) and ``relu`` (ReLU + L1
penalty weighted by decoder norms). Saved SAELens-style: ``cfg.json`` + ``sae.safetensors``.
Fidelity: loss recovered = (L_zero - L_sae) / (L_zero - L_clean) when the reconstruction replaces the
residual (L_zero: residual zero-ablated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from ..progress import progress_bar

from ..artifacts import (
    CFG_JSON,
    SAE_WEIGHTS,
    ArtifactError,
    load_safetensors,
    read_cfg,
    save_safetensors,
    write_cfg,
    write_json,
)
from ..config import Config, ConfigError
from ..data.loader import BlockData
from ..errors import MoexError
from ..model.gpt import GPT
from .sites import SAESite, check_layer, default_layer, register_site


@dataclass
class SAEConfig(Config):
    label: ClassVar[str] = "SAE"

    d_in: int = 0  # residual width; 0: the model's d_model
    d_sae: int = 4096
    kind: str = "topk"  # topk | relu
    k: int = 32
    k_aux: int = 256
    aux_coef: float = 1 / 32
    dead_after: int = 200  # steps without firing after which a latent counts as dead
    l1_coef: float = 1.0
    lr: float = 1e-3
    layer: int = -1  # block whose output it reads; -1: 3/4 of the depth
    checkpoint: str = ""
    # training
    steps: int = 2000
    batch: int = 8  # blocks per step
    seed: int = 0

    def validate(self) -> None:
        if self.kind not in ("topk", "relu"):
            raise ConfigError(f"SAE kind {self.kind!r} must be topk or relu")
        if self.kind == "topk" and not 1 <= self.k <= self.d_sae:
            raise ConfigError(f"k={self.k} must be in 1..d_sae={self.d_sae}")


class SAE(nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if cfg.d_in < 1:
            raise ConfigError(f"an SAE needs its input width (d_in={cfg.d_in})")
        self.cfg = cfg
        w = torch.randn(cfg.d_sae, cfg.d_in)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("steps_since_fired", torch.zeros(cfg.d_sae, dtype=torch.long))

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        if self.cfg.kind == "relu":
            return torch.relu(pre)
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        pre = self.pre(x)
        z = self.encode(x)
        recon = self.decode(z)
        err = x - recon
        mse = err.pow(2).sum(-1).mean()
        stats = {"mse": mse.item(), "l0": (z > 0).sum(-1).float().mean().item()}
        with torch.no_grad():
            fired = (z > 0).any(0)
            self.steps_since_fired += 1
            self.steps_since_fired[fired] = 0
        if self.cfg.kind == "relu":
            l1 = (z * self.W_dec.norm(dim=1)).sum(-1).mean()
            return mse + self.cfg.l1_coef * l1, {**stats, "l1": l1.item()}
        dead = self.steps_since_fired > self.cfg.dead_after
        total = mse
        if dead.any():
            k_aux = min(self.cfg.k_aux, int(dead.sum()))
            vals, idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
            z_aux = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
            aux = (err.detach() - z_aux @ self.W_dec).pow(2).sum(-1).mean()
            total = total + self.cfg.aux_coef * aux
            stats["aux"] = aux.item()
        stats["dead"] = int(dead.sum())
        return total, stats

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def save(self, out_dir: str | Path) -> None:
        """``cfg.json`` + ``sae.safetensors`` (SAELens layout), each written atomically."""
        out_dir = Path(out_dir)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_safetensors(out_dir / SAE_WEIGHTS, state)
        write_cfg(out_dir / CFG_JSON, self.cfg.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "SAE":
        path = Path(path)
        if not (path / SAE_WEIGHTS).exists():
            raise ArtifactError(f"{path} holds no {SAE_WEIGHTS}")
        sae = cls(SAEConfig.from_dict(read_cfg(path / CFG_JSON), source=str(path / CFG_JSON)))
        try:
            sae.load_state_dict(load_safetensors(path / SAE_WEIGHTS))
        except RuntimeError as e:
            raise ArtifactError(f"{path / SAE_WEIGHTS} does not fit {path / CFG_JSON}: {str(e).splitlines()[0]}") \
                from None
        return sae


@torch.no_grad()
def residual_batches(model: GPT, data, layer: int, batch: int, gen: torch.Generator, device: str):
    while True:
        x, _ = data.sample("train", batch, gen)
        yield model.residual(x.to(device), layer).reshape(-1, model.cfg.d_model)


def for_model(cfg: SAEConfig, model: GPT) -> SAEConfig:
    """``cfg`` with the model's residual width and, when unset, the default layer (3/4 depth)."""
    layer = default_layer(model) if cfg.layer < 0 else check_layer(model, cfg.layer)
    if cfg.d_in and cfg.d_in != model.cfg.d_model:
        raise ConfigError(f"d_in={cfg.d_in} is not the model's residual width {model.cfg.d_model}")
    return cfg.replace("SAE settings", d_in=model.cfg.d_model, layer=layer)


def train_sae(model: GPT, data, cfg: SAEConfig, device: str = "cpu", progress: bool = True) -> SAE:
    """Train an SAE (``cfg.steps`` steps of ``cfg.batch`` blocks) on the residual stream after block
    ``cfg.layer`` over ``data``'s train blocks."""
    cfg = for_model(cfg, model)
    model = model.to(device).eval()
    sae = SAE(cfg).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.steps
    batches = residual_batches(model, data, cfg.layer, cfg.batch, gen, device)
    first = next(batches)
    with torch.no_grad():
        sae.b_dec.copy_(first.median(dim=0).values)  # geometric-median-like init
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    bar = progress_bar(range(steps), desc=f"sae {cfg.kind}", disable=not progress)
    for _ in bar:
        x = next(batches)
        loss, stats = sae.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.normalize_decoder()
        bar.set_postfix(mse=f"{stats['mse']:.4f}", l0=f"{stats['l0']:.1f}")
    return sae


@torch.no_grad()
def loss_recovered(model: GPT, sae: SAE, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Cross-entropy clean, with the SAE reconstruction spliced in after the layer, and zero-ablated."""
    layer = sae.cfg.layer
    resid = model.residual(x, layer)
    clean = model.loss_from_residual(resid, layer, y).item()
    spliced = model.loss_from_residual(sae.decode(sae.encode(resid)), layer, y).item()
    zero = model.loss_from_residual(torch.zeros_like(resid), layer, y).item()
    return {"loss_clean": clean, "loss_sae": spliced, "loss_zero": zero,
            "loss_recovered": (zero - spliced) / (zero - clean) if zero != clean else float("nan")}


@torch.no_grad()
def sae_fidelity(model: GPT, sae: SAE, data: BlockData, n_blocks: int = 16, device: str = "cpu") -> dict[str, float]:
    """``loss_recovered`` and the mean l0 of the latents on the first ``n_blocks`` validation blocks."""
    model, sae = model.to(device).eval(), sae.to(device).eval()
    x, y = data.blocks("val", np.arange(min(n_blocks, data.n_blocks("val"))))
    x, y = x.to(device), y.to(device)
    fid = loss_recovered(model, sae, x, y)
    fid["val_l0"] = (sae.encode(model.residual(x, sae.cfg.layer)) > 0).sum(-1).float().mean().item()
    return fid


def fit_sae(checkpoint: str | Path, data_dir: str | Path, out: str | Path, cfg: SAEConfig,
            device: str = "cpu") -> tuple[SAE, dict[str, Any]]:
    """What ``moex sae train`` does: train an SAE on a checkpoint's residual stream, save it in ``out`` with
    ``fidelity.json`` (loss recovered, l0), and return both."""
    model = GPT.from_pretrained(checkpoint)
    data = BlockData(data_dir)
    cfg = cfg.replace("SAE settings", checkpoint=str(checkpoint))
    sae = train_sae(model, data, cfg, device=device)
    sae.save(out)
    fid = sae_fidelity(model, sae, data, device=device)
    write_json(Path(out) / "fidelity.json", fid)
    return sae, fid


def sae_site(model: GPT, layer: int | None, directory: str) -> SAESite:
    """The ``sae:DIR`` site: latents of the SAE saved in DIR (at its own layer)."""
    if not directory:
        raise MoexError("site 'sae' needs the SAE's directory: sae:DIR")
    sae = SAE.load(directory)
    if layer is not None and layer != sae.cfg.layer:
        raise MoexError(f"the SAE in {directory} reads layer {sae.cfg.layer}, not layer {layer}")
    return SAESite(model, sae, name=f"sae:{directory}")


register_site("sae", sae_site)
