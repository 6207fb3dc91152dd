"""Run directories and checkpoints.

RUN_DIR/
  cfg.json, model.safetensors   the newest model (what ``moex.io.load_model(RUN_DIR)`` reads)
  train.json                    the training configuration
  metrics.csv, metrics.jsonl    logs
  ckpt-0001000/                 cfg.json + model.safetensors + train_state.pt (+ train.json)
A checkpoint directory is written under a temporary name and renamed when complete, so a killed run
never leaves a half checkpoint; ``--resume`` continues from the newest complete one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import MoexError
from ..io import atomic_write, save_model, write_json
from ..model.gpt import GPT
from .config import TrainConfig

_CKPT = re.compile(r"^ckpt-(\d+)$")


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    out = []
    for p in run_dir.glob("ckpt-*"):
        m = _CKPT.match(p.name)
        if m and (p / "train_state.pt").exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ck = checkpoints(run_dir)
    return ck[-1][1] if ck else None


def save_checkpoint(
    run_dir: Path, model: GPT, tcfg: TrainConfig, state: dict[str, Any], keep: int, keep_every: int
) -> Path:
    step = state["step"]
    final = run_dir / f"ckpt-{step:07d}"
    tmp = run_dir / f".tmp-ckpt-{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(model, tmp)
    torch.save(state, tmp / "train_state.pt")
    write_json(tmp / "train.json", tcfg.to_dict())
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    # the run's top-level model: the newest checkpoint's weights
    for name in ("model.safetensors", "cfg.json"):
        atomic_write(run_dir / name, lambda p, n=name: shutil.copyfile(final / n, p))
    for s, p in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if not (keep_every and s % keep_every == 0):
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_train_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=False)


def read_train_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "train.json"
    if not path.exists():
        raise MoexError(f"{path} not found: {run_dir} is not a moex run directory")
    return TrainConfig.from_dict(json.loads(path.read_text()), source=str(path))


def write_train_config(run_dir: Path, tcfg: TrainConfig) -> None:
    write_json(run_dir / "train.json", tcfg.to_dict())
