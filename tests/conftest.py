"""Shared fixtures. Real data from tests/data (small excerpts with their provenance in tests/data/README.md);
nothing outside the repository is read."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
PGNS = [DATA / "chess" / "Fischer.pgn.zst", DATA / "chess" / "Tal.pgn.zst"]
FISCHER = PGNS[0]
SHAKESPEARE = DATA / "text" / "tiny-shakespeare-head.txt"
WIKI_VALID = DATA / "text" / "wikitext-2-valid-head.txt"
WIKI_TEST = DATA / "text" / "wikitext-2-test-head.txt"
CONLLU = DATA / "text" / "en_ewt-ud-dev-head.conllu"


@pytest.fixture(scope="session")
def chess_games_dir(tmp_path_factory) -> Path:
    """A directory with games.txt: the master games of tests/data/chess (Fischer, Tal: about 3,200 games)."""
    from moex.data.chess.importer import import_games

    out = tmp_path_factory.mktemp("chess_games")
    import_games(PGNS, out, workers=2, progress=False)
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
    pytest.importorskip("tiktoken")
    from moex import build_text, run_training

    root = tmp_path_factory.mktemp("probe")
    build_text([str(SHAKESPEARE)], root / "data", block=65, val_fraction=0.05, workers=1,
               progress=False)
    for mlp in ("gelu", "moex"):
        run_training(root / mlp, "tiny-lm", mlp, dict(data=str(root / "data"), n_layer=2, ctx=64, max_steps=20,
                                                      batch_size=8, eval_interval=20, eval_batches=2,
                                                      warmup_steps=2, lr=3e-3), progress=False)
    return root
