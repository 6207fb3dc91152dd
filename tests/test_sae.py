"""SAE baseline: TopK and ReLU SAEs, splicing, scoring through the chess metrics."""

import json

import torch

from moex.cli import main
from moex.interp.sae import SAE, SAEConfig
from moex.model import GPT, make_config


def test_topk_sae_shapes_and_sparsity():
    sae = SAE(SAEConfig(d_in=16, d_sae=64, k=4))
    z = sae.encode(torch.randn(10, 16))
    assert z.shape == (10, 64) and ((z > 0).sum(-1) <= 4).all()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_sae_training_reduces_reconstruction_error():
    torch.manual_seed(0)
    basis = torch.randn(32, 16)
    for kind in ("topk", "relu"):
        sae = SAE(SAEConfig(d_in=16, d_sae=64, k=4, kind=kind, l1_coef=0.01, lr=3e-3))
        opt = torch.optim.Adam(sae.parameters(), lr=3e-3)

        def batch():
            codes = torch.relu(torch.randn(256, 32)) * (torch.rand(256, 32) < 0.1)
            return codes @ basis

        x = batch()
        before = sae.loss(x)[1]["mse"]
        for _ in range(300):
            loss, _ = sae.loss(batch())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sae.normalize_decoder()
        after = sae.loss(x)[1]["mse"]
        assert after < 0.3 * before, (kind, before, after)


def test_splicing_the_clean_residual_recovers_the_loss():
    torch.manual_seed(0)
    model = GPT(make_config("tiny", n_layer=2)).eval()
    x = torch.randint(0, 32, (2, 20))
    with torch.no_grad():
        assert torch.allclose(model.loss_from_residual(model.residual(x, 0), 0, x), model(x, x).loss, atol=1e-6)


def test_sae_cli_and_scoring(chess_blocks_dir, chess_games_dir, tmp_path):
    torch.manual_seed(0)
    GPT(make_config("tiny", n_layer=2)).save_pretrained(tmp_path / "m")
    out = tmp_path / "sae"
    assert main(["sae", "train", "--checkpoint", str(tmp_path / "m"), "--data", str(chess_blocks_dir),
                 "--layer", "1", "d_sae=256", "k=8", "steps=20", "batch=2",
                 "--out", str(out)]) == 0
    fid = json.loads((out / "fidelity.json").read_text())
    assert {"loss_clean", "loss_sae", "loss_zero", "loss_recovered"} <= set(fid)
    games = tmp_path / "g.txt"
    games.write_text("\n".join(open(chess_games_dir / "games.txt").read().split("\n")[:20]) + "\n")
    assert main(["interp", "chess", "--checkpoint", str(tmp_path / "m"), "--games", str(games), "--sae", str(out),
                 "--out", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["pieces"]["n_features"] == 256 and res["layer"] == 1
    assert SAE.load(out).cfg.k == 8
