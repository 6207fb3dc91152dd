"""Run directories and checkpoints.

RUN_DIR/
  cfg.json, model.safetensors   the newest model (what ``GPT.from_pretrained(RUN_DIR)`` reads)
  train.json                    the training configuration
  metrics.csv, metrics.jsonl    logs
  ckpt-0001000/                 cfg.json + model.safetensors + train_state.pt (+ train.json)
A checkpoint directory is written under a temporary name and renamed when complete, so a killed run
never leaves a half checkpoint; ``--resume`` continues from the newest complete one.
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..artifacts import (
    CFG_JSON,
    MODEL_WEIGHTS,
    TRAIN_JSON,
    TRAIN_STATE,
    ArtifactError,
    atomic_write,
    read_json,
    write_json,
)
from ..errors import MoexError
from ..model.gpt import GPT
from .config import TrainConfig

_CKPT = re.compile(r"^ckpt-(\d+)$")


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    out = []
    for p in run_dir.glob("ckpt-*"):
        m = _CKPT.match(p.name)
        if m and (p / TRAIN_STATE).exists():
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
    model.save_pretrained(tmp)
    torch.save(state, tmp / TRAIN_STATE)
    write_json(tmp / TRAIN_JSON, tcfg.to_dict())
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    # the run's top-level model: the newest checkpoint's weights
    for name in (MODEL_WEIGHTS, CFG_JSON):
        atomic_write(run_dir / name, lambda p, n=name: shutil.copyfile(final / n, p))
    for s, p in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if not (keep_every and s % keep_every == 0):
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_train_state(ckpt: Path) -> dict[str, Any]:
    """The optimizer and random-generator state of a checkpoint: tensors and plain values only, read with
    ``weights_only=True`` so a run directory from elsewhere cannot run code on ``moex train --resume``."""
    path = ckpt / TRAIN_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ArtifactError(f"{path}: holds Python objects beyond tensors and plain values, which moex does not "
                            f"load (they could run code: {str(e).splitlines()[0][:120]}); delete {ckpt} to resume "
                            "from the previous checkpoint") from None
    except Exception as e:  # a truncated or foreign file: name it instead of a pickle traceback
        raise ArtifactError(f"{path}: cannot read the training state ({type(e).__name__}: {e}); "
                            f"delete {ckpt} to resume from the previous checkpoint") from None


def read_train_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / TRAIN_JSON
    if not path.exists():
        raise MoexError(f"{path} not found: {run_dir} is not a moex run directory")
    return TrainConfig.from_dict(read_json(path), source=str(path))


def write_train_config(run_dir: Path, tcfg: TrainConfig) -> None:
    write_json(Path(run_dir) / TRAIN_JSON, tcfg.to_dict())


def start_run(run_dir: str | Path, model: GPT, tcfg: TrainConfig) -> Path:
    """A new run that starts from ``model``'s weights at step 0 (fresh optimizer and schedule): writes the
    model and ``train.json``; ``train(run_dir, resume=True)`` then trains it. Upcycling and "dense
    continued" start this way. Refuses a directory that already holds checkpoints."""
    run_dir = Path(run_dir)
    if latest_checkpoint(run_dir) is not None:
        raise MoexError(f"{run_dir} already holds checkpoints; choose another directory")
    model.save_pretrained(run_dir)
    write_train_config(run_dir, tcfg)
    return run_dir
