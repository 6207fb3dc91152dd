"""``moex experiment chess``: router analysis against a loop, and the tiny scale end to end (slow tier)."""

import json
import math
import os
import re

import numpy as np
import pytest
import torch

from moex.data.loader import BlockData
from moex.experiments.chess import ROWS, format_tables, router_analysis, run_chess_experiment
from moex.model import GPT, make_config


@pytest.mark.parametrize("router", ["sparsity", "linear"])
def test_router_analysis_matches_a_loop(router, chess_blocks_dir):
    torch.manual_seed(0)
    model = GPT(make_config("tiny", "moe", n_layer=2, router=router, expert_act="relu")).eval()
    with torch.no_grad():
        for b in model.h:
            b.mlp.w_enc.add_(torch.randn_like(b.mlp.w_enc) * 0.02 + 0.01 * torch.randn(b.mlp.n_experts, 1, 1))
    a = router_analysis(model, chess_blocks_dir, layer=1, device="cpu", n_blocks=2)
    x, _ = BlockData(chess_blocks_dir).blocks("val", np.arange(2))
    moe = model.h[1].mlp
    with torch.no_grad():
        h = model.mlp_input(x, 1).reshape(-1, model.cfg.d_model)
        gates, l0s, selected_l0 = [], [], []
        for n in range(h.shape[0]):
            logits = moe.router(h[n:n + 1], moe.w_enc)[0]
            counts = [int((h[n] @ moe.w_enc[j] > 0).sum()) for j in range(moe.n_experts)]
            gates += logits.tolist()
            l0s += counts
            top = logits.topk(moe.top_k).indices.tolist()
            selected_l0 += [counts[j] for j in top]
    assert a["tokens"] == h.shape[0]
    assert a["pearson_r_gate_vs_l0"] == pytest.approx(np.corrcoef(gates, l0s)[0, 1], abs=1e-5)
    assert a["mean_l0_selected"] == pytest.approx(np.mean(selected_l0), rel=1e-6)
    if router == "sparsity":
        assert a["pearson_r_gate_vs_l0"] < -0.5  # the gate is a decreasing function of expected l0


@pytest.mark.slow
def test_tiny_scale_end_to_end_and_resumable(tmp_path):
    out = tmp_path / "exp"
    results = run_chess_experiment(out, scale="tiny", seed=0)
    names = {r["name"] for r in results["rows"]}
    assert names == {r.name for r in ROWS} | {"sae"}
    for t in ("table1", "table3", "table4", "router"):
        assert (out / f"{t}.md").exists()
    assert (out / "router.png").exists()  # matplotlib comes with the test extra
    table1 = (out / "table1.md").read_text()
    for label in ("GELU", "GEGLU", "SoLU", "Monet-HD", "Monet-VD", "PEER", "Switch", "MoE-X", "SAE"):
        assert label in table1
    for r in results["rows"]:
        assert 0 <= r["coverage"] <= 1 and 0 <= r["reconstruction"] <= 1, r
        if r["name"] != "sae":  # every model row says how well it plays
            assert 0 <= r["legal_move_rate"] <= 1 and 0 <= r["probe_accuracy"] <= 1, r
        assert r["val_loss"] is None or math.isfinite(r["val_loss"])
    assert "| legal moves | board probe |" in table1 and "random characters" in table1
    ra = results["router_analysis"]
    assert ra["moex"]["router"] == "sparsity" and ra["moex-relu-linear"]["router"] == "linear"
    assert ra["moex"]["pearson_r_gate_vs_l0"] < 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    # a second invocation trains nothing: every run directory is left as it was
    stamps = {p: os.path.getmtime(p) for p in out.glob("runs/*/metrics.jsonl")}
    again = run_chess_experiment(out, scale="tiny", seed=0)
    assert {p: os.path.getmtime(p) for p in out.glob("runs/*/metrics.jsonl")} == stamps
    assert again["rows"] == results["rows"]
    assert format_tables(again)["table1"] == table1


@pytest.mark.slow
def test_experiment_under_torchrun_two_processes(chess_games_dir, tmp_path):
    """Every rank trains; rank 0 alone writes data, upcycled weights, scores and tables."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
                        "-m", "moex.cli", "experiment", "chess", "--scale", "tiny", "--out", str(out),
                        "--games", str(chess_games_dir), "--device", "cpu", "--only", "gelu", "moex"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [row["name"] for row in results["rows"]] == ["gelu", "moex"]
    assert r.stdout.count("# Table 1") == 1  # printed by rank 0 only
    assert "moex" in results["router_analysis"]


@pytest.mark.parametrize("kwargs,message", [
    ({"device": "tpu"}, "device='tpu' must be auto, cpu or cuda"),
    ({"steps": -1}, "steps=-1 must be at least 1"),
    ({"games": 0}, "games=0 must be at least 1"),
    ({"engine": "komodo"}, "engine='komodo' must be auto, stockfish or random"),
])
def test_demo_settings_are_checked_before_any_work(tmp_path, kwargs, message):
    from moex import ConfigError
    from moex.experiments.chess import run_demo

    with pytest.raises(ConfigError, match=re.escape(message)):
        run_demo(tmp_path / "demo", **kwargs)
    assert not (tmp_path / "demo" / "games").exists()  # no self-play happened


def test_given_held_out_games_are_used_and_checked(chess_games_dir, tmp_path):
    """--games/--eval-games: imported games train, the held-out file evaluates; a held-out game that is also
    a training game is refused before any work."""
    from moex import MoexError
    from moex.data.chess.importer import read_games
    from moex.experiments.chess import prepare_chess_data

    games = read_games(chess_games_dir / "games.txt")[:60]
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "games.txt").write_text("\n".join(games[10:]) + "\n")
    held_out = tmp_path / "eval.txt"
    held_out.write_text("\n".join(games[:10]) + "\n")
    blocks, eval_path, _ = prepare_chess_data(tmp_path / "exp", 1, 2, 255, games_dir=str(tmp_path / "train"),
                                              eval_file=str(held_out), engine="random")
    assert eval_path == held_out and (blocks / "meta.json").exists()
    assert not (tmp_path / "exp" / "games").exists()  # nothing generated
    leaky = tmp_path / "leaky.txt"
    leaky.write_text("\n".join(games[5:15]) + "\n")
    with pytest.raises(MoexError, match=r"leaky.txt: 5 of its 10 games are also training games"):
        prepare_chess_data(tmp_path / "exp2", 1, 2, 255, games_dir=str(tmp_path / "train"), eval_file=str(leaky),
                           engine="random")
    assert not (tmp_path / "exp2" / "blocks").exists()
