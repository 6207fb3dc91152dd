"""Model zoo: GPT backbone with dense, gated and MoE MLPs, and the wide-sparse view of any MLP.

Importing this package registers the built-in MLP kinds (``mlp``, ``moe``, ``monet``, ``peer``).
"""

from .config import BACKBONES, ModelConfig, make_config
from .gpt import GPT, GPTOutput
from .layer import (MLPKind, MLPLayer, WideCode, build_mlp, mlp_kind, mlp_kinds, mlp_presets, register_mlp,
                    unregister_mlp)
from .mlp import DenseMLP, GegluMLP
from .moe import MoE, load_balance_loss
from .monet import MonetMLP
from .peer import PEER
from .summary import format_summary, summarize, summarize_config
from .upcycle import upcycle

load_model = GPT.from_pretrained

__all__ = [
    "BACKBONES", "ModelConfig", "make_config", "MLPKind", "MLPLayer", "WideCode", "build_mlp", "mlp_kind",
    "mlp_kinds", "mlp_presets", "register_mlp", "unregister_mlp",
    "DenseMLP", "GegluMLP", "MoE", "load_balance_loss", "MonetMLP",
    "PEER", "GPT", "GPTOutput", "format_summary", "summarize", "summarize_config", "upcycle", "load_model",
]
