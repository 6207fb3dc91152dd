"""Chess data: vocabulary, import (real PGNs), bad input, self-play, blocks and board-state labels."""

import gzip
import json

import chess
import chess.pgn
import numpy as np
import pytest
import torch
from conftest import FISCHER, PGNS

from moex.cli import main
from moex.data.chess import CHARS, VocabError, decode, encode
from moex.data.chess.blocks import build_blocks, pack_blocks
from moex.data.chess.importer import import_games, open_text, read_games
from moex.data.chess.labels import board_labels, eval_positions
from moex.data.chess.selfplay import SelfPlayConfig, find_stockfish, generate_games
from moex.data.chess.transcript import replay
from moex.data.loader import BlockData, DataError


def test_vocab_matches_reference_order():
    assert CHARS[0] == " " and CHARS[4] == "." and CHARS[15] == ";" and len(CHARS) == 32
    assert CHARS == " #+-.0123456789;=BKNOQRabcdefghx"


def test_encode_decode_round_trip():
    t = ";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.O-O-O exd8=Q+ 5.Qxf7#"
    ids = encode(t)
    assert ids.dtype == np.uint8 and decode(ids) == t


def test_unknown_character_names_game_and_column():
    with pytest.raises(VocabError, match=r"game 7: character 'z' at column 6"):
        encode(";1.e4z", where="game 7")
    with pytest.raises(VocabError, match="column 3"):
        encode(";1é4", where="game 1")


@pytest.mark.slow
def test_import_every_test_pgn(tmp_path):
    """Both collections of tests/data/chess, and Fischer's a second time: each distinct game is imported once."""
    report = import_games(PGNS + [FISCHER], tmp_path, workers=2, progress=False)
    imported, skipped = report.imported, len(report.skipped)
    games = read_games(tmp_path / "games.txt")
    reasons = [json.loads(line)["reason"] for line in open(tmp_path / "skipped.jsonl")]
    print(f"imported {imported}, skipped {skipped}; reasons: "
          f"{sorted(set(r.split(' (')[0] for r in reasons))}")
    assert imported == len(games) > 3_000 and len(set(games)) == len(games)
    # a game in two collections is imported once: the second copy of Fischer's is all duplicates
    fischer = import_games([FISCHER], tmp_path / "fischer", workers=1, progress=False).imported
    assert sum(r.startswith("duplicate (the same transcript as ") for r in reasons) >= fischer
    assert all(g.startswith(";1.") and len(g) >= 150 for g in games)
    assert all(" 1." not in g for g in games[:100])


def test_transcripts_reach_the_pgn_final_position(tmp_path):
    src = FISCHER
    import_games([src], tmp_path, min_chars=0, workers=1, progress=False)
    games = read_games(tmp_path / "games.txt")
    finals = []
    with open_text(src) as f:
        while (g := chess.pgn.read_game(f)) is not None:
            if not g.errors and "FEN" not in g.headers and len(list(g.mainline_moves())) > 0:
                finals.append(g.end().board().fen())
    assert len(finals) == len(games)
    for t, fen in zip(games, finals):
        *_, board = replay(t)
        assert board.fen() == fen


PGN_OK = """[Event "Good"]
[White "Ljubojević, Ljubomir"]
[Black "Šahović"]
[Result "1-0"]

1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 4. Ba4 Nf6 5. O-O Be7 6. Re1 b5 7. Bb3 d6 8. c3 O-O
9. h3 Nb8 10. d4 Nbd7 11. c4 c6 12. cxb5 axb5 13. Nc3 Bb7 14. Bg5 b4 1-0

"""
PGN_ILLEGAL = """[Event "Illegal"]
[Result "*"]

1. e4 e5 2. Ke3 Nc6 3. Bb5 a6 *

"""
PGN_TRUNCATED = """[Event "Truncated"]
[Result "*"]

1. d4 d5 2. c4 e6 3. Nc3 Nf6 4. Bg5 Be7 5. e3 O-O 6. Nf3 h6 7. Bh4 b6 8. cxd5 Nxd5 9. Bxe7 Qxe7 10. Nx"""


def test_bad_pgn_input_is_reported_and_good_games_kept(tmp_path):
    (tmp_path / "empty.pgn").write_text("")
    (tmp_path / "mixed.pgn").write_text(PGN_OK + PGN_ILLEGAL + PGN_OK.replace("Good", "Good2").replace("Bg5 b4", "Bg5 h6")
                                          + PGN_TRUNCATED)
    with gzip.open(tmp_path / "ok.pgn.gz", "wt", encoding="utf-8") as f:
        f.write(PGN_OK)
    out = tmp_path / "out"
    rc = main(["data", "chess", "import", str(tmp_path / "empty.pgn"), str(tmp_path / "mixed.pgn"),
               str(tmp_path / "ok.pgn.gz"), "--out", str(out), "--min-chars", "100", "--workers", "1"])
    assert rc == 0
    games = read_games(out / "games.txt")
    assert len(games) == 2 and games[1].endswith("14.Bg5 h6")
    assert games[0].startswith(";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.Ba4 Nf6 5.O-O Be7")
    skipped = [json.loads(line) for line in open(out / "skipped.jsonl")]
    by_game = {(s["source"].split("/")[-1], s["game"]): s["reason"] for s in skipped}
    assert "illegal" in by_game[("mixed.pgn", 1)] and "Ke3" in by_game[("mixed.pgn", 1)]
    assert "truncated" in by_game[("mixed.pgn", 3)]
    assert "duplicate" in by_game[("ok.pgn.gz", 0)] and "mixed.pgn game 0" in by_game[("ok.pgn.gz", 0)]
    assert "no games found" in by_game[("empty.pgn", None)]


def test_csv_import_and_missing_column(tmp_path, capsys):
    good = ";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.Ba4 Nf6 5.O-O Be7 6.Re1 b5 7.Bb3 d6 8.c3 O-O 9.h3 Nb8 10.d4 Nbd7"
    (tmp_path / "games.csv").write_text(
        f"WhiteElo,transcript\n1500,{good}\n1600,;1.e4 e5 2.Qh5 Ke7 3.Qxf7#\n1700,;1.e4 e5 2.Ke3\n")
    (tmp_path / "wrong.csv").write_text("a,b\n1,2\n")
    out = tmp_path / "out"
    rc = main(["data", "chess", "import", str(tmp_path / "wrong.csv"), str(tmp_path / "games.csv"),
               "--out", str(out), "--min-chars", "20", "--workers", "1"])
    captured = capsys.readouterr().out
    assert rc == 0
    assert "wrong.csv: no 'transcript' column; columns: a, b" in captured
    assert read_games(out / "games.csv".replace(".csv", ".txt")) == [good, ";1.e4 e5 2.Qh5 Ke7 3.Qxf7+"]  # SAN re-written: not mate
    reasons = [json.loads(line)["reason"] for line in open(out / "skipped.jsonl")]
    assert any("row 4" in r and "Ke3" in r for r in reasons), reasons
    # the same game twice, in one file and across files: imported once, the copies named
    (tmp_path / "again.csv").write_text(f"transcript\n{good}\n")
    rc = main(["data", "chess", "import", str(tmp_path / "games.csv"), str(tmp_path / "again.csv"),
               "--out", str(out), "--min-chars", "20", "--workers", "1"])
    assert rc == 0 and read_games(out / "games.txt").count(good) == 1
    dup = [json.loads(line) for line in open(out / "skipped.jsonl") if "duplicate" in line]
    assert dup == [{"source": str(tmp_path / "again.csv"), "game": 0,
                    "reason": f"duplicate (the same transcript as {tmp_path / 'games.csv'} game 0)"}]
    assert "1 duplicate" in capsys.readouterr().out


def test_import_of_nothing_fails_clearly(tmp_path, capsys):
    (tmp_path / "empty.pgn").write_text("")
    assert main(["data", "chess", "import", str(tmp_path / "empty.pgn"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("moex:")]
    assert len(errors) == 1 and "no game was imported" in errors[0] and "empty.pgn: no games found" in errors[0]
    assert not (tmp_path / "o").exists()  # nothing left behind


def test_labels_equal_python_chess_boards(chess_games_dir):
    games = read_games(chess_games_dir / "games.txt")[:60]
    labels = board_labels(games)
    assert labels.pieces.shape[1:] == (12, 8, 8) and labels.bsp().shape[1] == 768
    k = 0
    for g, t in enumerate(games):
        dots = eval_positions(t)
        assert len(dots) == min(20, t[:256].count("."))
        sans = t[1:].split()
        board = chess.Board()
        for move_no, dot in enumerate(dots):
            assert labels.game[k] == g and labels.char[k] == dot
            for sq in range(64):
                p = board.piece_at(sq)
                r, c = sq // 8, sq % 8
                planes = labels.pieces[k, :, r, c]
                if p is None:
                    assert not planes.any() and labels.state[k, r, c] == 6
                else:
                    plane = (0 if p.color == chess.WHITE else 6) + p.piece_type - 1
                    assert planes.sum() == 1 and planes[plane]
                    assert labels.state[k, r, c] == 6 + (p.piece_type if p.color else -p.piece_type)
            # advance two plies: the tokens after this dot are "<white move> <black move>"
            for tok in sans[2 * move_no: 2 * move_no + 2]:
                board.push_san(tok.split(".")[-1])
            k += 1
    assert k == len(labels.game)


def test_labels_cli(chess_games_dir, tmp_path):
    games = tmp_path / "g.txt"
    games.write_text("\n".join(read_games(chess_games_dir / "games.txt")[:5]) + "\n")
    assert main(["data", "chess", "labels", str(games), "--out", str(tmp_path / "l.npz")]) == 0
    z = np.load(tmp_path / "l.npz")
    assert z["pieces"].shape == (len(z["game"]), 12, 8, 8)
    assert z["pieces"][0].sum() == 32  # initial board


def test_pack_blocks():
    g = [";1.e4 e5", ";1.d4 d5 2.c4", ";1.Nf3", ";1.c4 c5 2.Nc3 Nc6 3.g3 g6"]
    blocks = [decode(b) for b in pack_blocks(g, 12)]
    assert all(b.startswith(";") and len(b) == 12 for b in blocks)
    assert blocks[0] == ";1.e4 e5;1.d"  # the overflowing game fills the block, its tail dropped
    assert blocks[1] == ";1.Nf3;1.c4 "


def test_build_blocks_and_sampler(chess_blocks_dir):
    data = BlockData(chess_blocks_dir)
    meta = data.meta
    assert meta["vocab"] == CHARS and meta["block"] == 256
    for split in ("train", "val"):
        assert (data.splits[split][:, 0] == 15).all()  # every block starts with ';'
    x, y = data.sample("train", 8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 255) and torch.equal(x[:, 1:], y[:, :-1]) and (x[:, 0] == 15).all()


def test_blocks_split_by_game(tmp_path):
    games = tmp_path / "g.txt"
    lines = [f";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 {i}.a3" for i in range(10, 110)]
    games.write_text("\n".join(lines) + "\n")
    build_blocks([games], tmp_path / "b", val_fraction=0.1, block=32)
    data = BlockData(tmp_path / "b")
    train = {decode(b) for b in data.splits["train"]}
    val = {decode(b) for b in data.splits["val"]}
    assert not train & val


def test_missing_meta_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="meta.json not found"):
        BlockData(tmp_path)


def test_random_generator_is_reproducible_and_legal(tmp_path):
    cfg = SelfPlayConfig(engine="random", max_plies=120)
    a = generate_games(6, tmp_path / "a", cfg, seed=3, workers=1, progress=False).read_text()
    b = generate_games(6, tmp_path / "b", cfg, seed=3, workers=2, progress=False).read_text()
    assert a == b
    for t in a.strip().split("\n"):
        assert t.startswith(";1.")
        for _ in replay(t):
            pass


@pytest.mark.skipif(find_stockfish() is None, reason="Stockfish not installed (apt-get install stockfish)")
def test_random_opening_plies_vary_stockfish_openings(tmp_path):
    """Node-limited Stockfish plays White deterministically, so every game opens with the same first move; with
    random_plies=2 the first two plies are uniform over the legal moves (20 x 20 = 400 pairs from the start): 40
    games give 400 (1 - (1 - 1/400)^40) = 38.1 distinct pairs on average, fewer than 30 with negligible chance."""
    from moex.config import ConfigError
    from moex.data.chess.transcript import distinct_openings

    same = read_games(generate_games(20, tmp_path / "a", SelfPlayConfig(engine="stockfish", nodes=20, max_plies=10),
                                     seed=0, progress=False))
    varied = read_games(generate_games(40, tmp_path / "b", SelfPlayConfig(engine="stockfish", nodes=20, max_plies=10,
                                                                        random_plies=2), seed=0, progress=False))
    assert distinct_openings(same, plies=1) == 1
    assert distinct_openings(varied) >= 30 and all(replay(g) for g in varied)
    with pytest.raises(ConfigError, match="random_plies=10"):
        SelfPlayConfig(max_plies=10, random_plies=10)


@pytest.mark.skipif(find_stockfish() is None, reason="Stockfish not installed (apt-get install stockfish)")
def test_stockfish_selfplay_reproducible(tmp_path):
    cfg = SelfPlayConfig(engine="stockfish", nodes=200, max_plies=40)
    openings = [";1.e4 c5 2.Nf3 d6", ";1.d4 d5 2.c4 e6"]
    a = generate_games(4, tmp_path / "a", cfg, seed=1, workers=1, openings=openings, progress=False).read_text()
    b = generate_games(4, tmp_path / "b", cfg, seed=1, workers=2, openings=openings, progress=False).read_text()
    assert a == b
    games = a.strip().split("\n")
    assert len(games) == 4 and all(len(list(replay(t))) > 0 for t in games)


def test_zst_csv_import_and_generate_cli_with_openings(tmp_path, capsys):
    import zstandard

    good = ";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.Ba4 Nf6 5.O-O Be7 6.Re1 b5 7.Bb3 d6 8.c3 O-O 9.h3 Nb8 10.d4 Nbd7"
    data = f"transcript\n{good}\n".encode()
    (tmp_path / "g.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    assert main(["data", "chess", "import", str(tmp_path / "g.csv.zst"), "--out", str(tmp_path / "i"),
                 "--min-chars", "10", "--workers", "1"]) == 0
    assert read_games(tmp_path / "i" / "games.txt") == [good]

    (tmp_path / "openings.csv").write_text("opening\n1.d4 Nf6 2.c4 e6\n")
    assert main(["data", "chess", "generate", "--games", "12", "--seed", "5",
                 "--openings", str(tmp_path / "openings.csv"), "--out", str(tmp_path / "gen"),
                 "--workers", "1", "engine=random", "max_plies=60"]) == 0
    games = read_games(tmp_path / "gen" / "games.txt")
    assert len(games) == 12
    from_opening = [g for g in games if g.startswith(";1.d4 Nf6 2.c4 e6")]
    assert 0 < len(from_opening) < 12  # ~30% of games start from an opening line


def test_a_bad_character_names_the_file_and_game_before_the_shuffle(tmp_path):
    from moex.data.chess.blocks import build_blocks

    (tmp_path / "g.txt").write_text(";1.e4 e5\n\n;1.d4 d5\n;1.e4 {x}\n")
    with pytest.raises(VocabError, match=r"g.txt: game 3: character '\{' at column 7"):
        build_blocks([tmp_path / "g.txt"], tmp_path / "b", block=8)


def test_cli_bad_sizes_paths_and_programs_are_one_line_errors(tmp_path, capsys):
    from moex.cli import main

    games = tmp_path / "games.txt"
    games.write_text(";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.Ba4 Nf6 5.O-O Be7 6.Re1 b5 7.Bb3 d6 8.c3 O-O\n" * 4)
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "afile").write_text("mine")
    pgn = tmp_path / "g.pgn"
    pgn.write_text('[Event "x"]\n\n1. e4 e5 *\n')
    cases = [
        (["data", "chess", "generate", "--games", "-5", "--out", str(tmp_path / "g")], "n_games=-5"),
        (["data", "chess", "generate", "--games", "2", "--out", str(tmp_path / "g"), "engine=stockfish",
          "stockfish_path=/nonexistent"], "stockfish_path='/nonexistent' does not exist"),
        (["data", "chess", "build", str(games), "--out", str(tmp_path / "b"), "--block", "0"], "block=0"),
        (["data", "chess", "build", str(tmp_path / "binary.txt"), "--out", str(tmp_path / "b")], "not a text file"),
        (["data", "chess", "build", str(games), "--out", str(tmp_path / "afile"), "--block", "64"], "afile"),
        (["data", "chess", "build", str(pgn), "--out", str(tmp_path / "b")], "moex data chess import"),
        (["data", "chess", "import", str(tmp_path / "missing.pgn"), "--out", str(tmp_path / "i")], "missing.pgn not found"),
        (["data", "chess", "import", str(pgn), "--out", str(tmp_path / "i"), "--min-chars", "-5"], "min_chars=-5"),
        (["data", "chess", "import", str(pgn), "--out", str(tmp_path / "i"), "--workers", "-3"], "workers=-3"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("moex: error:") and message in err[-1], (argv, err)
        assert "Traceback" not in "\n".join(err)
    assert (tmp_path / "afile").read_text() == "mine"
