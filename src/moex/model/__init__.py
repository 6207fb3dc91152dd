"""Model zoo: GPT backbone with dense, gated and MoE MLPs, and the wide-sparse view of any MLP."""

from .config import BACKBONES, MLP_PRESETS, ConfigError, ModelConfig, make_config
from .gpt import GPT, GPTOutput
from .mlp import WideCode
from .moe import MoE, load_balance_loss
from .summary import summarize
from .upcycle import upcycle

__all__ = [
    "BACKBONES", "MLP_PRESETS", "ConfigError", "ModelConfig", "make_config", "GPT", "GPTOutput",
    "WideCode", "MoE", "load_balance_loss", "summarize", "upcycle",
]
