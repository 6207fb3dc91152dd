"""moex: interpretable-by-construction language models (MoE-X) and the metrics that measure them.

The public API is flat: ``from moex import GPT, make_config, train, score_chess, ...``. Names are
imported on first use, so ``import moex`` (and the CLI's start) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # errors and configs
    "MoexError": "moex.errors", "ConfigError": "moex.config", "ArtifactError": "moex.artifacts",
    "Config": "moex.config", "parse_overrides": "moex.config", "read_settings": "moex.config",
    # models
    "GPT": "moex.model", "GPTOutput": "moex.model", "ModelConfig": "moex.model", "make_config": "moex.model",
    "load_model": "moex.model", "BACKBONES": "moex.model", "MLPLayer": "moex.model", "WideCode": "moex.model",
    "register_mlp": "moex.model", "unregister_mlp": "moex.model",
    "mlp_kinds": "moex.model", "mlp_presets": "moex.model", "MoE": "moex.model",
    "summarize": "moex.model", "summarize_config": "moex.model", "format_summary": "moex.model",
    "upcycle": "moex.model",
    # data
    "BlockData": "moex.data.loader", "DataError": "moex.data.loader", "read_games": "moex.data.chess.importer",
    "import_games": "moex.data.chess.importer", "SelfPlayConfig": "moex.data.chess.selfplay",
    "generate_games": "moex.data.chess.selfplay", "build_blocks": "moex.data.chess.blocks",
    "board_labels": "moex.data.chess.labels", "build_text": "moex.data.text.build",
    # training
    "TrainConfig": "moex.training.config", "Trainer": "moex.training.trainer", "train": "moex.training.trainer",
    "run_training": "moex.training.trainer", "upcycle_run": "moex.training.trainer",
    "start_run": "moex.training.checkpoint",
    # interpretability
    "Site": "moex.interp.sites", "site_for": "moex.interp.sites", "register_site": "moex.interp.sites",
    "collect": "moex.interp.sites", "default_layer": "moex.interp.sites", "collect_chess": "moex.interp.collect",
    "score_chess": "moex.interp.chess_eval", "score_features": "moex.interp.chess_eval",
    "bsp_metrics": "moex.interp.bsp", "SAE": "moex.interp.sae", "SAEConfig": "moex.interp.sae",
    "train_sae": "moex.interp.sae", "sae_fidelity": "moex.interp.sae", "fit_sae": "moex.interp.sae",
    # evaluation and experiments
    "evaluate_checkpoints": "moex.eval.ppl", "Scale": "moex.experiments.chess",
    "run_chess_experiment": "moex.experiments.chess", "run_demo": "moex.experiments.chess",
    "router_analysis": "moex.experiments.chess",
    # chess competence
    "generate": "moex.model.generate", "KVCache": "moex.model.gpt", "legal_move_rate": "moex.eval.legal_moves",
    "MatchConfig": "moex.eval.chess_games", "play_match": "moex.eval.chess_games",
    "elo_estimate": "moex.eval.chess_games", "board_probes": "moex.interp.board_probes",
    "ChessEvalConfig": "moex.eval.chess_competence", "evaluate_chess": "moex.eval.chess_competence",
    # the browser
    "build_site": "moex.browse.build", "BrowseConfig": "moex.browse.build", "screenshots": "moex.browse.chromium",
    "model_fingerprint": "moex.interp.sites",
    # other ecosystems
    "export_hf": "moex.export", "ExportError": "moex.export",
    "run_autointerp": "moex.autointerp.pipeline", "AutointerpConfig": "moex.autointerp.pipeline",
    "run_probe": "moex.analysis.probing", "probe_concepts": "moex.analysis.probing",
    "compare_probes": "moex.analysis.probing", "run_experts": "moex.analysis.expert_explanations",
    "HFModel": "moex.interp.hf_readers", "MoexReader": "moex.interp.readers",
    "load_tokenizer": "moex.data.text.tokenizer", "run_study": "moex.experiments.studies",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'moex' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
