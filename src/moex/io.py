"""Artifacts on disk: ``cfg.json`` + ``model.safetensors`` side by side, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from .errors import MoexError
from .model.config import ModelConfig
from .model.gpt import GPT


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2) + "\n"))


def model_state(model: GPT) -> dict[str, torch.Tensor]:
    """State dict without the tied lm_head alias, contiguous, on CPU."""
    sd = model.state_dict()
    if model.cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_model(model: GPT, out_dir: str | Path) -> None:
    """Write ``cfg.json`` and ``model.safetensors`` into ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    state = model_state(model)
    atomic_write(out_dir / "model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
    write_json(out_dir / "cfg.json", model.cfg.to_dict())


def load_model(run_dir: str | Path, map_location: str | torch.device = "cpu") -> GPT:
    """Load a model saved by ``save_model`` (a run directory or a checkpoint directory), or a Hugging Face
    GPT-2 checkpoint directory (``config.json`` + weights)."""
    from .model.hf import is_hf_gpt2, load_hf_gpt2

    run_dir = Path(run_dir)
    if is_hf_gpt2(run_dir):
        return load_hf_gpt2(run_dir, map_location)
    cfg_path, weights = run_dir / "cfg.json", run_dir / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: {run_dir} is not a moex checkpoint directory")
    cfg = ModelConfig.load(cfg_path)
    model = GPT(cfg)
    state = load_file(str(weights), device=str(map_location))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise MoexError(
            f"{weights} does not match {cfg_path} (mlp={cfg.mlp}): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return model.to(map_location)
