"""BSP coverage and reconstruction against known answers and a slow loop-based implementation."""

import json

import numpy as np
import pytest
import torch

from moex.cli import main
from moex.data.chess.importer import read_games
from moex.data.chess.labels import board_labels
from moex.interp.bsp import THRESHOLDS, bsp_metrics, state_onehot


def sparse_labels(p=400, g=24, rate=0.01, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.random((p, g)) < rate
    lab[rng.integers(0, p, g), np.arange(g)] = True
    lab[:p // 2][rng.integers(0, p // 2, (12, g)), np.arange(g)] = True  # >= 10 positives in the train half
    return lab


def half(p):
    return np.arange(p) < p // 2


def test_indicator_features_score_one():
    lab = sparse_labels(rate=0.2)
    r = bsp_metrics(lab.astype(np.float32), lab, half(len(lab)))
    assert r.coverage == pytest.approx(1.0, abs=1e-6)
    assert r.reconstruction == pytest.approx(1.0, abs=1e-6)


def test_scaled_and_offset_indicator_found_at_right_threshold():
    lab = sparse_labels(rate=0.2)
    feats = lab * 3.0 + 1.0  # on values 4, off values 1: on iff t * 4 < 4 and t * 4 >= 1 -> t in 0.3..0.9
    r = bsp_metrics(feats, lab, half(len(lab)))
    assert r.coverage == pytest.approx(1.0, abs=1e-6) and r.reconstruction == pytest.approx(1.0, abs=1e-6)
    good = [t for t, c in zip(THRESHOLDS, r.coverage_by_threshold) if c > 0.999]
    assert good == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_constant_and_random_features_score_near_zero():
    lab = sparse_labels(p=2000, g=32, rate=0.01)
    const = np.ones((2000, 16), dtype=np.float32)
    r = bsp_metrics(const, lab, half(2000))
    base = lab[:1000].mean()
    # an always-on feature scores 2p/(1+p) on a BSP of base rate p (a property of the metric)
    assert r.coverage < 3 * base and r.reconstruction == 0.0
    rnd = np.random.default_rng(1).random((2000, 64)).astype(np.float32)
    r = bsp_metrics(rnd, lab, half(2000))
    assert r.coverage < 0.1 and r.reconstruction < 0.05


def slow_metrics(F, L, train, fmax, min_precision=0.95, min_tp=10):
    P, n = F.shape
    G = L.shape[1]
    cov, rec, per_bsp, per_board = [], [], [], []
    for t in THRESHOLDS:
        best = [0.0] * G
        hp = [[False] * G for _ in range(n)]
        for f in range(n):
            on = [F[p, f] > t * fmax[f] for p in range(P)]
            for g in range(G):
                tp = sum(1 for p in range(P) if train[p] and on[p] and L[p, g])
                n_on = sum(1 for p in range(P) if train[p] and on[p])
                n_true = sum(1 for p in range(P) if train[p] and L[p, g])
                prec, recall = tp / (n_on + 1e-8), tp / (n_true + 1e-8)
                best[g] = max(best[g], 2 * prec * recall / (prec + recall + 1e-8))
                hp[f][g] = prec >= min_precision and tp >= min_tp
        cov.append(sum(best) / G)
        per_bsp.append(best)
        TP = FP = FN = 0
        boards = []
        for p in range(P):
            if train[p]:
                continue
            btp = bfp = bfn = 0
            for g in range(G):
                pred = any(hp[f][g] and F[p, f] > t * fmax[f] for f in range(n))
                btp += pred and L[p, g]
                bfp += pred and not L[p, g]
                bfn += (not pred) and L[p, g]
            TP, FP, FN = TP + btp, FP + bfp, FN + bfn
            bp, br = btp / (btp + bfp + 1e-8), btp / (btp + bfn + 1e-8)
            boards.append(2 * bp * br / (bp + br + 1e-8))
        prec, recall = TP / (TP + FP + 1e-8), TP / (TP + FN + 1e-8)
        rec.append(2 * prec * recall / (prec + recall + 1e-8))
        per_board.append(sum(boards) / len(boards))
    # B.2: a threshold per BSP; B.3: the mean of the per-board F1
    coverage_per_bsp = sum(max(per_bsp[ti][g] for ti in range(len(THRESHOLDS))) for g in range(G)) / G
    return cov, rec, coverage_per_bsp, per_board


def test_agrees_with_loop_implementation():
    rng = np.random.default_rng(3)
    P, n, G = 120, 7, 5
    L = rng.random((P, G)) < 0.3
    F = np.where(rng.random((P, n)) < 0.6, 0.0, rng.random((P, n))).astype(np.float32)
    F[:, 0] = L[:, 0] * (0.5 + rng.random(P))  # one informative feature
    F[:, 1] = 0.0  # a dead feature
    train = rng.random(P) < 0.5
    fmax = F.max(0) * 1.1
    cov, rec, cov_bsp, per_board = slow_metrics(F, L, train, fmax, min_tp=3)
    r = bsp_metrics(F, L, train, f_max=fmax, chunk=3, min_tp=3)
    assert r.coverage_by_threshold == pytest.approx(cov, abs=1e-6)
    assert r.reconstruction_by_threshold == pytest.approx(rec, abs=1e-6)
    assert r.coverage_per_bsp == pytest.approx(cov_bsp, abs=1e-6) and r.coverage_per_bsp >= r.coverage - 1e-9
    assert r.reconstruction_per_board_by_threshold == pytest.approx(per_board, abs=1e-6)
    assert r.reconstruction_per_board == pytest.approx(max(per_board), abs=1e-6)
    assert r.coverage == pytest.approx(max(cov), abs=1e-6) and r.alive_features == n - 1


def test_per_bsp_threshold_coverage_on_features_perfect_at_different_thresholds():
    """Feature 0 is BSP 0's indicator only at t <= 0.3; feature 1 is BSP 1's only at t in 0.6..0.8.
    A shared threshold cannot have both; one threshold per BSP (appendix B.2) can."""
    P = 200
    lab = np.zeros((P, 2), dtype=bool)
    lab[::4, 0] = True
    lab[1::4, 1] = True
    f = np.zeros((P, 2), dtype=np.float32)
    f[:, 0] = np.where(lab[:, 0], 0.35, 0.0)  # on (f > t * 1) exactly on BSP 0 for t <= 0.3, never above
    f[:, 1] = np.where(lab[:, 1], 0.85, np.where(lab[:, 0], 0.55, 0.0))  # BSP 1 alone only for t in 0.6..0.8
    fmax = np.ones(2, dtype=np.float32)
    r = bsp_metrics(f, lab, half(P), f_max=fmax)
    # brute force: per t, the best F1 of each BSP over both features
    best = np.zeros((len(THRESHOLDS), 2))
    for ti, t in enumerate(THRESHOLDS):
        for g in range(2):
            for j in range(2):
                on = f[: P // 2, j] > t * fmax[j]
                tp = (on & lab[: P // 2, g]).sum()
                prec, rec = tp / (on.sum() + 1e-8), tp / (lab[: P // 2, g].sum() + 1e-8)
                best[ti, g] = max(best[ti, g], 2 * prec * rec / (prec + rec + 1e-8))
    assert best[:, 0].max() == pytest.approx(1.0, abs=1e-6) and best[:, 1].max() == pytest.approx(1.0, abs=1e-6)
    assert r.coverage_per_bsp == pytest.approx(1.0, abs=1e-6)  # B.2: each BSP at its own threshold
    assert r.coverage == pytest.approx(best.mean(1).max(), abs=1e-6) and r.coverage < 0.9  # shared threshold


def test_per_board_reconstruction_on_boards_with_known_f1():
    """Test boards with known predicted and true sets: the per-board mean (B.3) against the pooled F1."""
    G, reps = 4, 30
    train_lab = np.zeros((4 * reps, G), dtype=bool)
    for g in range(G):
        train_lab[g * reps:(g + 1) * reps, g] = True  # feature g is BSP g's perfect classifier on train
    test_lab = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)
    test_on = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=bool)
    # per-board F1: 1; 2*(1/2*1)/(1/2+1) = 2/3; 0 (nothing predicted); 2*(1/2*1)/(1/2+1) = 2/3
    lab = np.concatenate([train_lab, test_lab])
    feats = np.concatenate([train_lab, test_on]).astype(np.float32)
    r = bsp_metrics(feats, lab, np.arange(len(lab)) < len(train_lab))
    assert r.reconstruction_per_board == pytest.approx((1 + 2 / 3 + 0 + 2 / 3) / 4, abs=1e-6)
    tp, fp, fn = 2 + 1 + 0 + 1, 0 + 1 + 0 + 1, 0 + 0 + 2 + 0  # pooled over boards (Karvonen's code)
    assert r.reconstruction == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)


def test_state_onehot():
    s = np.full((1, 8, 8), 6, dtype=np.int8)
    s[0, 0, 0] = 10
    oh = state_onehot(s).reshape(13, 64)
    assert oh[10, 0] and not oh[6, 0] and oh[6, 1:].all() and oh.sum() == 64


def test_score_chess_equals_scoring_the_collected_features(chess_games_dir, tmp_path):
    from moex import GPT, collect_chess, make_config, score_chess, score_features

    torch.manual_seed(0)
    model = GPT(make_config("tiny", "moex", n_layer=2))
    games = read_games(chess_games_dir / "games.txt")[:40]
    ra = score_chess(model, games, layer=1)
    acts = collect_chess(model, games, layer=1, fmax_games=20)  # f_max over the 20 train games (the default)
    rb = score_features(games, acts.features, acts.f_max)
    assert ra["fmax_split"] == "train" and ra["definitions"]["coverage_per_bsp"].startswith("MoE-X appendix B.2")
    all_games = score_chess(model, games, layer=1, fmax_split="all")
    acts_all = collect_chess(model, games, layer=1)
    assert all_games["pieces"] == score_features(games, acts_all.features, acts_all.f_max)["pieces"]
    assert ra["pieces"] == rb["pieces"] and ra["piece_state"] == rb["piece_state"]
    assert ra["pieces"]["n_features"] == 8 * 512 and ra["layer"] == 1 and ra["site"] == "mlp"
    n_pos = len(board_labels(games).game)
    assert acts.features.shape == (n_pos, 8 * 512)
    # the CLI round trip: features saved by one command, scored by another
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "g.txt").write_text("\n".join(games) + "\n")
    assert main(["interp", "chess-features", "--checkpoint", str(tmp_path / "ckpt"), "--games",
                 str(tmp_path / "g.txt"), "--layer", "1", "--out", str(tmp_path / "f.npy")]) == 0
    assert main(["interp", "chess-score", "--games", str(tmp_path / "g.txt"), "--features", str(tmp_path / "f.npy"),
                 "--fmax", str(tmp_path / "f.fmax.npy"), "--out", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["pieces"] == ra["pieces"]


def test_chess_score_rejects_wrong_row_count(chess_games_dir, tmp_path, capsys):
    games = tmp_path / "g.txt"
    games.write_text("\n".join(read_games(chess_games_dir / "games.txt")[:4]) + "\n")
    np.save(tmp_path / "f.npy", np.zeros((3, 5), dtype=np.float32))
    assert main(["interp", "chess-score", "--games", str(games), "--features", str(tmp_path / "f.npy"),
                 "--out", str(tmp_path / "o.json")]) == 2
    assert "evaluation positions" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    from moex import run_demo

    res = run_demo(tmp_path / "demo", games=200, eval_games=60, steps=30, up_steps=20)
    assert [r["mlp"] for r in res["rows"]] == ["gelu", "switch", "moex"]
    assert [r["init"] for r in res["rows"]] == ["scratch", "upcycle", "upcycle"]
    assert (tmp_path / "demo" / "table1.md").read_text().count("|") > 20
    for r in res["rows"]:
        assert 0 <= r["coverage"] <= 1 and 0 <= r["reconstruction"] <= 1 and r["val_loss"] < 3.4
