"""Chess competence: legal-move rate, games against Stockfish, linear board probes, each against an
independent computation (python-chess replays, brute-force counts, simulated Elo)."""

import json
import random

import chess
import numpy as np
import pytest
import torch

from moex.cli import main
from moex.config import ConfigError
from moex.data.chess.importer import read_games
from moex.data.chess.labels import board_labels
from moex.data.chess.selfplay import find_stockfish
from moex.data.chess.transcript import transcript_sans
from moex.data.chess.vocab import encode
from moex.eval.chess_competence import ChessEvalConfig, evaluate_chess, format_chess_eval, headline
from moex.eval.chess_games import (FirstLegalPlayer, MatchConfig, RandomPlayer, StockfishMissing, WriterPlayer,
                                   elo_estimate, play_match, skill_elo, summarize_games)
from moex.eval.legal_moves import (ModelWriter, NotAChessModel, RandomCharWriter, classify, fit_prompt,
                                   legal_move_rate, sample_prefixes, score_writer)
from moex.interp.board_probes import baseline, board_probes, probe_layer, residuals_at_positions, subset
from moex.model import GPT, make_config

needs_stockfish = pytest.mark.skipif(find_stockfish() is None, reason="Stockfish not installed (apt-get install stockfish)")


@pytest.fixture(scope="module")
def games(chess_games_dir):
    return read_games(chess_games_dir / "games.txt")[:60]


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(make_config("tiny", "gelu", n_layer=2, d_model=32, n_head=2, d_mlp=64, **kw)).eval()


def board_after(prompt: str) -> chess.Board:
    """Independent replay: push every SAN of the prompt (its trailing move number is not a move)."""
    board = chess.Board()
    for san in transcript_sans(prompt):
        board.push_san(san)
    return board


@pytest.mark.parametrize("fen,text,outcome", [
    (chess.STARTING_FEN, "e4 ", "legal"), (chess.STARTING_FEN, "Nf3", "legal"), (chess.STARTING_FEN, "e5 ", "illegal"),
    (chess.STARTING_FEN, "O-O ", "illegal"), (chess.STARTING_FEN, "Zz9 ", "unparsable"),
    (chess.STARTING_FEN, " ", "unparsable"), (chess.STARTING_FEN, ";", "unparsable"),
    (chess.STARTING_FEN, "e4e5", "illegal"), (chess.STARTING_FEN, "0000 ", "unparsable"),  # not the null move
    ("4k3/8/8/8/8/8/8/N3K1N1 w - - 0 1", "Nc2 ", "legal"),  # only the a1 knight reaches c2
    ("4k3/8/8/8/8/8/8/1N1K1N2 w - - 0 1", "Nd2 ", "illegal"),  # b1 and f1 both reach d2: ambiguous
])
def test_classify_hand_examples(fen, text, outcome):
    assert classify(chess.Board(fen), text)[0] == outcome


def test_prefixes_are_game_prefixes_ending_where_the_next_move_begins(games):
    prefixes = sample_prefixes(games, 300, max_prompt=120, seed=3)
    assert len(prefixes) == 300 and len({p.game for p in prefixes}) == len(games)
    for p in prefixes:
        game = games[p.game]
        assert game.startswith(p.prompt) and len(p.prompt) <= 120
        board = board_after(p.prompt)
        assert board.fen() == p.fen and board.ply() == p.ply
        assert p.prompt.endswith(f"{p.ply // 2 + 1}.") if p.ply % 2 == 0 else p.prompt.endswith(" ")
        assert transcript_sans(game)[p.ply] == p.answer
    assert {p.ply % 2 for p in prefixes} == {0, 1}


def test_fit_prompt_keeps_the_end_from_a_move_boundary():
    game = games_text = ";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.Ba4 Nf6 5.O-O Be7 6."
    cut = fit_prompt(games_text, 20)
    assert len(cut) <= 20 and cut.startswith(";") and game.endswith(cut[1:])
    assert cut[1] != " " and game[len(game) - len(cut)] == " "
    assert fit_prompt(game, 100) == game


def test_legal_move_rate_counts_equal_a_python_chess_recount(games):
    model = tiny_model()
    writer = ModelWriter(model, seed=0)
    prefixes = sample_prefixes(games, 200, writer.max_prompt, seed=0)
    res = score_writer(writer, prefixes, 0.0)
    texts = writer([p.prompt for p in prefixes], [0.0] * len(prefixes))
    counts = {"legal": 0, "illegal": 0, "unparsable": 0}
    for p, t in zip(prefixes, texts):
        board, san = board_after(p.prompt), t.rstrip(" ;")
        if not san or ";" in san or " " in san:
            counts["unparsable"] += 1
            continue
        try:
            board.parse_san(san)
            counts["legal"] += 1
        except (chess.IllegalMoveError, chess.AmbiguousMoveError):
            counts["illegal"] += 1
        except ValueError:
            counts["unparsable"] += 1
    assert {k: res[k] for k in counts} == counts and res["n"] == 200
    assert sum(ph["n"] for ph in res["by_phase"].values()) == 200
    early = [i for i, p in enumerate(prefixes) if p.move_number <= 10]
    assert res["by_phase"]["moves 1-10"]["n"] == len(early)


class AnswerWriter:
    """Writes the game's own next move: every move legal, every move the game's."""

    def __init__(self, prefixes):
        self.answers = {p.prompt: p.answer for p in prefixes}

    def __call__(self, prompts, temperatures):
        return [self.answers[p] + " " for p in prompts]


def test_a_writer_of_the_games_moves_scores_one(games):
    prefixes = list({p.prompt: p for p in sample_prefixes(games, 100, 250, seed=1)}.values())  # openings repeat
    res = score_writer(AnswerWriter(prefixes), prefixes, 0.0)
    assert res["legal_rate"] == 1.0 and res["game_move_rate"] == 1.0


def test_random_weights_model_is_near_chance(games):
    res = legal_move_rate(tiny_model(), games, n=300, seed=0)
    assert res["chance"]["legal_rate"] < 0.02
    for key in ("greedy", "sampled"):
        assert res[key]["legal_rate"] < 0.05, res[key]
    assert len(res["greedy"]["examples"]) == 5


def test_random_char_writer_is_uniform_and_stops_at_move_end():
    texts = RandomCharWriter(seed=0)(["x"] * 3000, [1.0] * 3000)
    firsts = [t[0] for t in texts]
    assert all(t[-1] in " ;" or len(t) == 10 for t in texts)
    assert all(" " not in t[:-1] and ";" not in t[:-1] for t in texts)
    counts = np.bincount([ord(c) for c in firsts], minlength=128)
    assert counts[ord("e")] == pytest.approx(3000 / 32, rel=0.35)


def test_not_a_chess_model_names_its_vocabulary(games):
    torch.manual_seed(0)
    lm = GPT(make_config("tiny", "gelu", n_layer=1, d_model=16, n_head=2, d_mlp=32, vocab_size=100))
    with pytest.raises(NotAChessModel, match="100 entries"):
        legal_move_rate(lm, games, n=5)


# games -------------------------------------------------------------------------------------------
def replays_to_record(record):
    """The record's transcript replays with python-chess, and its termination and score agree."""
    board = chess.Board()
    for san in transcript_sans(record["transcript"]):
        board.push_san(san)
    assert board.ply() == record["plies"]
    outcome = board.outcome(claim_draw=True)
    if record["termination"] == "forfeit":
        assert record["score"] == 0 and record["illegal"] >= 5
        player = chess.WHITE if record["color"] == "white" else chess.BLACK
        assert board.turn == player and outcome is None
    elif record["termination"] == "max_plies":
        assert record["score"] == 0.5 and outcome is None
    else:
        assert outcome.termination.name.lower() == record["termination"]
        expected = 0.5 if outcome.winner is None else float(outcome.winner == (record["color"] == "white"))
        assert record["score"] == expected


@needs_stockfish
def test_games_against_stockfish_replay_with_python_chess():
    cfg = MatchConfig(levels=[0], games_per_level=1, movetime=0.01, max_plies=120)
    records = play_match(RandomPlayer(0), cfg, progress=False) + play_match(FirstLegalPlayer(), cfg, progress=False)
    records += play_match(WriterPlayer(ModelWriter(tiny_model())), cfg, progress=False)
    assert len(records) == 6
    for r in records:
        replays_to_record(r)
    model_games = [r for r in records if r["player"] == "model"]
    assert all(r["termination"] == "forfeit" and r["legal"] + r["illegal"] >= 5 for r in model_games)


def test_match_against_the_random_mover_needs_no_stockfish_and_uses_openings(tmp_path):
    (tmp_path / "openings.csv").write_text("opening\n1.e4 e5 2.Nf3 Nc6\n1.d4 d5\n")
    cfg = MatchConfig(levels=[-2], games_per_level=2, colors="black", max_plies=60, openings=str(tmp_path / "openings.csv"),
                      stockfish_path="/nonexistent/stockfish")
    records = play_match(RandomPlayer(1), cfg, progress=False)
    assert [r["transcript"][:10] for r in records] == [";1.e4 e5 2", ";1.d4 d5 2"]
    for r in records:
        replays_to_record(r)
    rows = summarize_games(records)
    assert rows[-1]["level"] == "all" and rows[-1]["games"] == 2 and rows[-1]["elo"]["n_games"] == 0


def test_missing_stockfish_is_a_clear_error():
    with pytest.raises(StockfishMissing, match="does not exist.*apt-get install stockfish"):
        play_match(RandomPlayer(0), MatchConfig(levels=[1], stockfish_path="/nonexistent/stockfish"), progress=False)


@pytest.mark.parametrize("bad,match", [({"levels": [21]}, "levels"), ({"levels": []}, "levels"),
                                       ({"games_per_level": 0}, "games_per_level=0: must be at least 1"), ({"colors": "red"}, "colors"),
                                       ({"movetime": 0}, "movetime"), ({"baselines": ["gm"]}, "baselines")])
def test_match_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        MatchConfig.from_dict(bad)


def test_elo_estimate_recovers_a_simulated_rating():
    rng = random.Random(0)
    true, levels = 1700.0, [0, 2, 4, 6, 8]
    opp, scores = [], []
    for _ in range(400):
        for lv in levels:
            e = 1 / (1 + 10 ** ((skill_elo(lv) - true) / 400))
            opp.append(skill_elo(lv))
            scores.append(1.0 if rng.random() < e else 0.0)
    est = elo_estimate(opp, scores)
    assert est["bounded"] and abs(est["elo"] - true) < 40 and est["low"] < true < est["high"]
    # brute force: the estimate maximises the log-likelihood over a coarse grid too
    def ll(r):
        e = 1 / (1 + 10 ** ((np.array(opp) - r) / 400))
        return float(np.sum(np.array(scores) * np.log(e) + (1 - np.array(scores)) * np.log(1 - e)))
    assert ll(est["elo"]) >= max(ll(r) for r in range(1000, 2500, 10)) - 1e-6
    lost = elo_estimate([skill_elo(0)] * 10, [0.0] * 10)
    assert not lost["bounded"] and lost["elo"] is None and lost["high"] < skill_elo(0)


def test_skill_elo_anchors():
    assert skill_elo(0) == pytest.approx(1346.6) and skill_elo(20) == pytest.approx(1346.6 + 143.4 * 20 ** 0.806)
    assert skill_elo(-1) is None and skill_elo(-2) is None


# probes ------------------------------------------------------------------------------------------
def test_residuals_at_positions_equal_the_models_residual(games):
    model = tiny_model()
    res = residuals_at_positions(model, games[:7], batch=3)
    labels = board_labels(games[:7], model.cfg.ctx)
    for layer in range(2):
        rows = []
        for g in range(7):
            ids = torch.as_tensor(encode(games[g][:model.cfg.ctx]), dtype=torch.long)[None]
            r = model.residual(ids, layer)[0]
            rows.append(r[torch.as_tensor(labels.char[labels.game == g])])
        torch.testing.assert_close(res[layer], torch.cat(rows), atol=1e-5, rtol=1e-5)


def test_baselines_equal_brute_force(games):
    labels = board_labels(games, 256)
    train = labels.game < 30
    tr, te = subset(labels, train), subset(labels, ~train)
    got = baseline(tr, te)
    st_tr, st_te = tr.state.reshape(-1, 64), te.state.reshape(-1, 64)
    common = [np.bincount(st_tr[:, s].astype(int), minlength=13).argmax() for s in range(64)]
    assert got["state_accuracy"] == pytest.approx(np.mean(st_te == np.array(common)[None]), abs=1e-6)
    by_move = baseline(tr, te, by_move=True)
    k_tr = np.array([np.sum(tr.game[:i] == tr.game[i]) for i in range(len(tr.game))])
    k_te = np.array([np.sum(te.game[:i] == te.game[i]) for i in range(len(te.game))])
    correct = 0
    for i in range(len(te.game)):
        rows = st_tr[k_tr == k_te[i]] if (k_tr == k_te[i]).any() else st_tr
        pred = [np.bincount(rows[:, s].astype(int), minlength=13).argmax() for s in range(64)]
        correct += np.sum(st_te[i] == np.array(pred))
    assert by_move["state_accuracy"] == pytest.approx(correct / st_te.size, abs=1e-6)


def test_probes_read_a_board_that_is_linearly_there_and_not_noise(chess_games_dir):
    games = read_games(chess_games_dir / "games.txt")[:150]  # more train positions than feature dimensions
    labels = board_labels(games, 256)
    train = labels.game < 110
    tr, te = subset(labels, train), subset(labels, ~train)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(labels.state.reshape(-1, 64), dtype=torch.long), 13)
    g = torch.Generator().manual_seed(0)
    x = onehot.reshape(len(labels.game), -1).float() + 0.1 * torch.randn(len(labels.game), 832, generator=g)
    t = torch.as_tensor(train)
    good = probe_layer(x[t], x[~t], tr, te)
    # the board is in the features (one-hot, small noise): the probe closes most of the gap that the per-move
    # baseline leaves to perfect accuracy (3/4 of it; limited by the train positions, not by the features)
    by_move = baseline(tr, te, by_move=True)["state_accuracy"]
    assert good["state_accuracy"] > by_move + 0.75 * (1 - by_move) and good["pieces_accuracy"] > 0.99
    noise = torch.randn(len(labels.game), 64, generator=g)
    bad = probe_layer(noise[t], noise[~t], tr, te)
    assert bad["state_accuracy"] < baseline(tr, te)["state_accuracy"] + 0.01


def test_board_probes_of_an_untrained_model_stay_near_the_move_baseline(games):
    res = board_probes(tiny_model(), games)
    assert set(res["layers"]) == {"0", "1"} and res["best_layer"] in (0, 1)
    assert res["best_state_accuracy"] < res["move_baseline"]["state_accuracy"] + 0.03
    assert res["baseline"]["state_accuracy"] < res["move_baseline"]["state_accuracy"]


# composition, CLI ------------------------------------------------------------------------------------
def test_evaluate_chess_report_and_headline(games):
    res = evaluate_chess(tiny_model(), games[:20], ChessEvalConfig(prefixes=50, probes=True, play=True),
                         MatchConfig(levels=[-2], games_per_level=1, max_plies=20, baselines=["first-legal"]), device="cpu",
                         progress=False)
    h = headline(res)
    assert h["legal_move_rate"] == res["legal_moves"]["greedy"]["legal_rate"] and "probe_accuracy" in h
    text = format_chess_eval(res, "tiny")
    assert "random characters (chance)" in text and "first-legal" in text and "layer 1" in text
    assert {r["player"] for r in res["match"]["games"]} == {"model", "first-legal"}


def test_cli_eval_chess(tmp_path, games, capsys):
    model = tiny_model()
    model.save_pretrained(tmp_path / "run")
    (tmp_path / "games.txt").write_text("\n".join(games[:10]) + "\n")
    assert main(["eval", "chess", "--checkpoint", str(tmp_path / "run"), "--games", str(tmp_path / "games.txt"),
                 "--out", str(tmp_path / "ev"), "prefixes=20", "probes=false"]) == 0
    saved = json.loads((tmp_path / "ev" / "chess_eval.json").read_text())
    assert saved["legal_moves"]["n_prefixes"] == 20 and "probes" not in saved
    capsys.readouterr()
    (tmp_path / "g.pgn").write_text('[Event "x"]\n\n1. e4 e5 *\n')
    (tmp_path / "bad.txt").write_text(";1.e4 e5 2.Nf3 Nf3\n;1.d4\n")
    cases = [(["--games", str(tmp_path / "g.pgn")], "moex data chess import"),
             (["--games", str(tmp_path / "bad.txt")], "game 1: move 2...Nf3"),
             (["--games", str(tmp_path / "missing.txt")], "missing.txt not found"),
             (["--games", str(tmp_path / "games.txt"), "play=true", "levels=[25]"], "levels=[25]"),
             (["--games", str(tmp_path / "games.txt"), "prefixes=0"], "prefixes=0")]
    for extra, message in cases:
        assert main(["eval", "chess", "--checkpoint", str(tmp_path / "run"), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("moex: error:") and message in err and "\n" not in err, err
