"""Training configuration (paper tables 6-7 defaults); model + train settings from presets and overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import Config, ConfigError, split_settings
from ..model.config import ModelConfig, make_config


@dataclass
class TrainConfig(Config):
    label: ClassVar[str] = "train"

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
    # chess interpretability during training (BSP coverage / reconstruction on held-out games)
    eval_chess_every: int = 0  # 0: off
    eval_chess_games: str = ""  # games.txt of held-out games
    eval_chess_n_games: int = 100  # the first N games: half label features, half are scored
    eval_chess_layer: int = -1  # -1: 3/4 of the depth

    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device={self.device!r} must be auto, cpu or cuda")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"dtype={self.dtype!r} must be auto, fp32 or bf16")
        for key in ("max_steps", "eval_interval", "log_interval", "ckpt_interval"):
            if getattr(self, key) < (0 if key == "max_steps" else 1):
                raise ConfigError(f"{key}={getattr(self, key)} must be positive")
        if self.eval_chess_every < 0 or (self.eval_chess_every and not self.eval_chess_games):
            raise ConfigError("eval_chess_every needs eval_chess_games (a games.txt of held-out games)")
        if self.eval_chess_n_games < 2:
            raise ConfigError(f"eval_chess_n_games={self.eval_chess_n_games} must be at least 2")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError(f"batch_size={self.batch_size} and grad_accum={self.grad_accum} must be at least 1")


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "chess-8l": dict(batch_size=100, lr=3e-4, min_lr=3e-5, warmup_steps=2000, max_steps=60_000),
    "lm-small": dict(batch_size=320, lr=3e-4, min_lr=3e-5, warmup_steps=5000, max_steps=100_000),
    "lm-medium": dict(batch_size=320, lr=3e-4, min_lr=3e-5, warmup_steps=5000, max_steps=100_000),
    "tiny": dict(batch_size=16, lr=1e-3, min_lr=1e-4, warmup_steps=20, max_steps=300, eval_interval=50,
                 eval_batches=4, ckpt_interval=100, log_interval=5),
}
TRAIN_PRESETS["tiny-lm"] = TRAIN_PRESETS["tiny"]


def build_configs(preset: str, mlp: str | None, settings: dict[str, Any],
                  source: str = "settings") -> tuple[ModelConfig, TrainConfig]:
    """Backbone preset + MLP preset + settings (each key a model or a train key) -> both configs."""
    model_over, train_over = split_settings(settings, ModelConfig, TrainConfig, source=source)
    mcfg = make_config(preset, mlp, **model_over)
    tcfg = TrainConfig.from_dict({**TRAIN_PRESETS.get(preset, {}), **train_over}, source)
    return mcfg, tcfg
