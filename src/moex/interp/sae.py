"""Sparse-autoencoder baseline on the residual stream ("post-res" after a block), METHODS sec 2.

Kinds: ``topk`` (Gao et al. 2024: z = TopK(W_enc (x - b_dec) + b_enc), unit-norm decoder rows, auxiliary
loss that reconstructs the residual error from the k_aux largest dead latents) and ``relu`` (ReLU + L1
penalty weighted by decoder norms). Saved SAELens-style: ``cfg.json`` + ``sae.safetensors``.
Fidelity: loss recovered = (L_zero - L_sae) / (L_zero - L_clean) when the reconstruction replaces the
residual (L_zero: residual zero-ablated).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..errors import MoexError
from ..io import atomic_write, write_json
from ..model.gpt import GPT


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int = 4096
    kind: str = "topk"  # topk | relu
    k: int = 32
    k_aux: int = 256
    aux_coef: float = 1 / 32
    dead_after: int = 200  # steps without firing after which a latent counts as dead
    l1_coef: float = 1.0
    lr: float = 1e-3
    layer: int = 6
    checkpoint: str = ""


class SAE(nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if cfg.kind not in ("topk", "relu"):
            raise MoexError(f"SAE kind {cfg.kind!r} must be topk or relu")
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
        out_dir = Path(out_dir)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(out_dir / "sae.safetensors", lambda p: save_file(state, p))
        write_json(out_dir / "cfg.json", dataclasses.asdict(self.cfg))

    @classmethod
    def load(cls, path: str | Path) -> "SAE":
        path = Path(path)
        if not (path / "sae.safetensors").exists():
            raise MoexError(f"{path} holds no sae.safetensors")
        sae = cls(SAEConfig(**json.loads((path / "cfg.json").read_text())))
        sae.load_state_dict(load_file(str(path / "sae.safetensors")))
        return sae


@torch.no_grad()
def residual_batches(model: GPT, data, layer: int, batch: int, gen: torch.Generator, device: str):
    while True:
        x, _ = data.sample("train", batch, gen)
        yield model.residual(x.to(device), layer).reshape(-1, model.cfg.d_model)


def train_sae(model: GPT, data, cfg: SAEConfig, steps: int = 2000, batch: int = 8, seed: int = 0,
              device: str = "cpu", progress: bool = True) -> SAE:
    """Train an SAE on the residual stream after block ``cfg.layer`` over ``data``'s train blocks."""
    model = model.to(device).eval()
    sae = SAE(cfg).to(device)
    gen = torch.Generator().manual_seed(seed)
    batches = residual_batches(model, data, cfg.layer, batch, gen, device)
    first = next(batches)
    with torch.no_grad():
        sae.b_dec.copy_(first.median(dim=0).values)  # geometric-median-like init
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    bar = tqdm(range(steps), desc=f"sae {cfg.kind}", disable=not progress)
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
