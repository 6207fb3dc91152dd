"""GPT-2-style decoder: pre-LayerNorm blocks, learned positions, causal SDPA attention, pluggable MLP."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..artifacts import CFG_JSON, MODEL_WEIGHTS, ArtifactError, load_safetensors, save_safetensors
from .config import ModelConfig
from .hf_gpt2 import is_hf_gpt2, read_hf_gpt2
from .layer import MLPLayer, WideCode, build_mlp


@dataclass
class GPTOutput:
    logits: Tensor
    loss: Tensor | None  # mean next-token cross-entropy (targets == -1 ignored)
    aux_loss: Tensor  # sum of the MoE layers' load-balance losses (0 for dense models)


class KVCache:
    """Keys and values of every layer for a batch of left-padded sequences, preallocated to ``size``.

    Row b holds ``pad[b]`` padding positions, then its tokens; padding keys are never attended to and
    positions count from each row's first real token, so a padded row computes what it would alone.
    ``length`` positions are filled; setting it back (``truncate``) discards what came after.
    """

    def __init__(self, cfg: ModelConfig, batch: int, size: int, pad: Tensor | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if size > cfg.ctx:
            raise ValueError(f"cache of {size} positions exceeds the model's context {cfg.ctx}")
        head_dim = cfg.d_model // cfg.n_head
        shape = (batch, cfg.n_head, size, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pad = torch.zeros(batch, dtype=torch.long, device=device) if pad is None else pad.to(device)
        self.size, self.length = size, 0

    def positions(self, t: int) -> Tensor:
        """(B, t) position ids of the next ``t`` tokens (0 at each row's first real token)."""
        pos = self.length + torch.arange(t, device=self.pad.device)[None, :] - self.pad[:, None]
        return pos.clamp(min=0)

    def mask(self, t: int) -> Tensor:
        """(B, 1, t, length + t) bool: query i sees keys from its row's first real token up to itself
        (a padding query sees only itself, so no row of the softmax is empty)."""
        q = self.length + torch.arange(t, device=self.pad.device)[:, None]
        k = torch.arange(self.length + t, device=self.pad.device)[None, :]
        seen = (k <= q)[None] & (k[None] >= self.pad[:, None, None])
        return (seen | (k == q)[None])[:, None]

    def truncate(self, length: int) -> None:
        self.length = length


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0,
                mask: Tensor | None = None) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (u.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for u in (q, k, v))
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        else:  # new tokens at cache.length..+t; attend to everything cached so far (``mask``)
            end = cache.length + t
            cache.k[layer][:, :, cache.length:end] = k
            cache.v[layer][:, :, cache.length:end] = v
            y = F.scaled_dot_product_attention(q, cache.k[layer][:, :, :end], cache.v[layer][:, :, :end],
                                               attn_mask=mask)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = build_mlp(cfg)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = x + self.attn(self.ln_1(x), cache, layer, mask)
        y, aux = self.mlp(self.ln_2(x))
        return x + y, aux


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.ctx, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer).
        std = 0.02 / math.sqrt(2 * cfg.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("w_dec"):
                nn.init.normal_(p, mean=0.0, std=std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.cfg.ctx:
            raise ValueError(f"sequence of length {t} exceeds the model's context {self.cfg.ctx}")
        pos = torch.arange(t, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def forward(self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None) -> GPTOutput:
        """Logits of every position of ``idx`` (B, T). With ``cache``, ``idx`` continues the cached
        sequences: only the new tokens are computed, and the cache grows by T."""
        if cache is None:
            x = self.embed(idx)
        else:
            if cache.length + idx.shape[1] > cache.size:
                raise ValueError(f"{idx.shape[1]} more tokens overflow the cache ({cache.length} of {cache.size} used)")
            x = self.drop(self.wte(idx) + self.wpe(cache.positions(idx.shape[1])))
        mask = None if cache is None else cache.mask(idx.shape[1])
        aux_total = x.new_zeros((), dtype=torch.float32)
        for i, block in enumerate(self.h):
            x, aux = block(x, cache, i, mask)
            if aux is not None:
                aux_total = aux_total + aux
        if cache is not None:
            cache.length += idx.shape[1]
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return GPTOutput(logits, loss, aux_total)

    # interpretability access ----------------------------------------------------------------------
    def residual(self, idx: Tensor, layer: int) -> Tensor:
        """Residual stream after block ``layer`` (0-based): (B, T, d)."""
        self._check_layer(layer)
        x = self.embed(idx)
        for block in self.h[: layer + 1]:
            x, _ = block(x)
        return x

    def loss_from_residual(self, resid: Tensor, layer: int, targets: Tensor) -> Tensor:
        """Cross-entropy when ``resid`` replaces the residual stream after block ``layer`` (splicing)."""
        x = resid
        for block in self.h[layer + 1:]:
            x, _ = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def mlp_input(self, idx: Tensor, layer: int) -> Tensor:
        """The normalised input that block ``layer``'s MLP sees: (B, T, d)."""
        self._check_layer(layer)
        x = self.residual(idx, layer - 1) if layer > 0 else self.embed(idx)
        block = self.h[layer]
        x = x + block.attn(block.ln_1(x))
        return block.ln_2(x)

    def mlp_code(self, idx: Tensor, layer: int, dense: bool = False) -> WideCode | Tensor:
        """The wide-sparse code z of block ``layer``'s MLP for every token of ``idx`` (B*T rows).

        Dense MLPs: their hidden units (what W_out multiplies). MoE: z = concat(w_j z^(j)) of width M*D,
        zero for unselected experts. Sparse ``WideCode`` by default; ``dense=True`` gives (B*T, M*D).
        In both cases ``self.h[layer].mlp.decode(code)`` equals the MLP's output.
        """
        code = self.h[layer].mlp.code(self.mlp_input(idx, layer))
        return code.to_dense() if dense else code

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.cfg.n_layer:
            raise ValueError(f"layer {layer} out of range: the model has layers 0..{self.cfg.n_layer - 1}")

    # artifacts -------------------------------------------------------------------------------------
    def state_for_saving(self) -> dict[str, Tensor]:
        """State dict without the tied lm_head alias, contiguous, on CPU."""
        sd = self.state_dict()
        if self.cfg.tie_embeddings:
            sd.pop("lm_head.weight", None)
        return {k: v.detach().contiguous().cpu() for k, v in sd.items()}

    def save_pretrained(self, out_dir: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write ``cfg.json`` and ``model.safetensors`` into ``out_dir`` (each atomically). ``dtype``
        (e.g. ``torch.float16``) stores floating weights at that precision, for small shareable copies;
        ``from_pretrained`` reads them back into the model's own float32 parameters."""
        out_dir = Path(out_dir)
        state = self.state_for_saving()
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_safetensors(out_dir / MODEL_WEIGHTS, state)
        self.cfg.save(out_dir / CFG_JSON)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "GPT":
        """A model saved by ``save_pretrained`` (a run or checkpoint directory), or a Hugging Face GPT-2
        directory (``config.json`` + weights). Bad files raise an error naming the file."""
        path = Path(path)
        if is_hf_gpt2(path):
            cfg, state = read_hf_gpt2(path)
            source = f"{path}: GPT-2 weights do not fit the model"
        else:
            cfg_path, weights = path / CFG_JSON, path / MODEL_WEIGHTS
            for p in (cfg_path, weights):
                if not p.exists():
                    raise ArtifactError(f"{p} not found: {path} is not a moex checkpoint directory")
            cfg = ModelConfig.load(cfg_path)
            state = load_safetensors(weights, device=str(map_location))
            source = f"{weights} does not match {cfg_path} (mlp={cfg.mlp})"
        model = cls(cfg)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shapes that disagree with the config
            lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
            raise ArtifactError(f"{source}: {lines[0] if lines else e}"
                                + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")) from None
        missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ArtifactError(f"{source}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        model.source_dir = path  # where it was read from (a text run's tokenizer.json lives there)
        return model.to(map_location)

    def mlp_layers(self) -> list[MLPLayer]:
        return [b.mlp for b in self.h]

    def track_stats(self, on: bool) -> None:
        """Whether the MLP layers keep the statistics of their forward passes (``MLPLayer.stats``): a trainer turns
        them on for the steps it logs only, since counting active units copies the whole activation."""
        for mlp in self.mlp_layers():
            mlp.track_stats = on

    def moe_layers(self) -> list[nn.Module]:
        from .moe import MoE

        return [b.mlp for b in self.h if isinstance(b.mlp, MoE)]
