"""Shared fixtures. Real data from ../shared/data when present, else generated games."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOEX_SHARED_DATA", REPO.parent / "shared" / "data"))
CHESS_DIR = SHARED / "chess"
TEXT_DIR = SHARED / "text"


def shared_pgns() -> list[Path]:
    return sorted(CHESS_DIR.glob("*.pgn")) if CHESS_DIR.exists() else []


@pytest.fixture(scope="session")
def chess_games_dir(tmp_path_factory) -> Path:
    """A directory with games.txt: the master games of two collections of ../shared/data/chess (Fischer, Tal:
    a few thousand games, a quarter of the full import's time), or 400 generated games."""
    from moex.data.chess.importer import import_games
    from moex.data.chess.selfplay import SelfPlayConfig, generate_games

    out = tmp_path_factory.mktemp("chess_games")
    pgns = [p for p in shared_pgns() if p.stem in ("Fischer", "Tal")]
    if pgns:
        import_games(pgns, out, workers=2, progress=False)
    else:
        generate_games(400, out, SelfPlayConfig(engine="random"), seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def chess_blocks_dir(chess_games_dir, tmp_path_factory) -> Path:
    """Blocks of 256 characters (the tiny preset's context + 1) from the session's games."""
    from moex.data.chess.blocks import build_blocks

    out = tmp_path_factory.mktemp("chess_blocks")
    build_blocks([chess_games_dir / "games.txt"], out, val_fraction=0.02, block=256)
    return out


@pytest.fixture(scope="session")
def text_runs(tmp_path_factory):
    """A dense GELU and an MoE-X ``tiny-lm`` (2 layers, ctx 64) trained 20 steps on Shakespeare."""
    if not (TEXT_DIR / "tiny-shakespeare.txt").exists():
        pytest.skip("../shared/data/text not present")
    pytest.importorskip("tiktoken")
    from moex import build_text, run_training

    root = tmp_path_factory.mktemp("probe")
    build_text([str(TEXT_DIR / "tiny-shakespeare.txt")], root / "data", block=65, val_fraction=0.05, workers=1,
               progress=False)
    for mlp in ("gelu", "moex"):
        run_training(root / mlp, "tiny-lm", mlp, dict(data=str(root / "data"), n_layer=2, ctx=64, max_steps=20,
                                                      batch_size=8, eval_interval=20, eval_batches=2,
                                                      warmup_steps=2, lr=3e-3), progress=False)
    return root
