"""moex: interpretable-by-construction language models (MoE-X) and the metrics that measure them."""

__version__ = "0.1.0"
