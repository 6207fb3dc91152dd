"""Training configuration (paper tables 6-7 defaults) and the key=value / --config resolution."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.config import ConfigError, ModelConfig, dataclass_from_dict, make_config


@dataclass
class TrainConfig:
    max_steps: int = 60_000
    batch_size: int = 100  # global batch, in blocks (sequences), summed over GPUs and accumulation
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 2000
    weight_decay: float = 0.1  # matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 500
    eval_batches: int = 20
    log_interval: int = 10
    ckpt_interval: int = 1000
    keep_ckpts: int = 2  # newest checkpoints kept (plus every keep_every-th)
    keep_every: int = 0  # 0: keep none beyond the newest keep_ckpts
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    data: str = ""  # data directory (meta.json + train.bin/val.bin)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "train config") -> "TrainConfig":
        return dataclass_from_dict(cls, d, source, "train")


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "chess-8l": dict(batch_size=100, lr=3e-4, min_lr=3e-5, warmup_steps=2000, max_steps=60_000),
    "lm-small": dict(batch_size=320, lr=3e-4, min_lr=3e-5, warmup_steps=5000, max_steps=100_000),
    "lm-medium": dict(batch_size=320, lr=3e-4, min_lr=3e-5, warmup_steps=5000, max_steps=100_000),
    "tiny": dict(batch_size=16, lr=1e-3, min_lr=1e-4, warmup_steps=20, max_steps=300, eval_interval=50,
                 eval_batches=4, ckpt_interval=100, log_interval=5),
}
TRAIN_PRESETS["tiny-lm"] = TRAIN_PRESETS["tiny"]

MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def split_overrides(overrides: dict[str, Any], source: str = "override") -> tuple[dict, dict]:
    """Route each key to the model or the train config; an unknown key is an error."""
    model, train = {}, {}
    for k, v in overrides.items():
        if k in MODEL_KEYS:
            model[k] = v
        elif k in TRAIN_KEYS:
            train[k] = v
        else:
            raise ConfigError(f"{source}: unknown key {k!r} (neither a model nor a train setting)")
    return model, train


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON file: flat keys, or {"model": {...}, "train": {...}}."""
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    flat = {k: v for k, v in d.items() if k not in ("model", "train")}
    flat.update(d.get("model", {}))
    flat.update(d.get("train", {}))
    return flat


def build_configs(preset: str, mlp: str | None, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    model_over, train_over = split_overrides(overrides)
    mcfg = make_config(preset, mlp, **model_over)
    tcfg = TrainConfig.from_dict({**TRAIN_PRESETS.get(preset, {}), **train_over})
    return mcfg, tcfg
