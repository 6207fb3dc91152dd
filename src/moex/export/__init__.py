"""Export moex models to other ecosystems: ``export_hf`` writes a transformers model directory."""

from .hf_export import ExportError, export_hf, hf_state_dict

__all__ = ["ExportError", "export_hf", "hf_state_dict"]
