"""Adding an MLP kind needs no library change: this file defines one, registers it, trains it, prints its
summary and scores its code on chess games, all through the public API."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import moex
from moex import GPT, MLPLayer, TrainConfig, WideCode, make_config, register_mlp, score_chess, summarize, train
from moex.cli import main
from moex.model.layer import dense_code, mlp_kinds, unregister_mlp


class SquaredReLUMLP(MLPLayer):
    """y = W_out relu(W_in x)^2 with half the dense width: a kind moex does not ship."""

    stat_names = ("l0", "max_act")

    def __init__(self, cfg):
        super().__init__()
        width = self.code_width(cfg)
        self.w_in = nn.Linear(cfg.d_model, width, bias=False)
        self.w_out = nn.Linear(width, cfg.d_model, bias=False)

    @classmethod
    def code_width(cls, cfg) -> int:
        return cfg.d_mlp // 2

    @classmethod
    def validate(cls, cfg) -> None:
        if cfg.d_mlp < 2:
            raise moex.ConfigError("toy-square needs d_mlp >= 2")

    def hidden(self, x):
        return F.relu(self.w_in(x)).square()

    def forward(self, x):
        h = self.hidden(x)
        if self.track_stats:
            with torch.no_grad():
                self.record(l0=(h != 0).sum(-1).float().mean(), max_act=h.max())
        return self.w_out(h), None

    def code(self, x) -> WideCode:
        return dense_code(self.hidden(x.reshape(-1, x.shape[-1])))

    def decode(self, code: WideCode):
        return self.w_out(code.values[:, 0])


@pytest.fixture()
def toy_kind():
    register_mlp("toy-square", SquaredReLUMLP, {"toy-square": {}, "toy-square-narrow": {"d_mlp": 256}})
    yield
    unregister_mlp("toy-square")
    assert "toy-square" not in mlp_kinds()
    with pytest.raises(KeyError, match="not registered"):
        unregister_mlp("toy-square")


def test_a_registered_kind_trains_summarises_and_scores(toy_kind, chess_blocks_dir, chess_games_dir, tmp_path, capsys):
    cfg = make_config("tiny", "toy-square-narrow", n_layer=2)
    assert cfg.mlp == "toy-square" and cfg.code_width == 128 and "toy-square" in moex.mlp_presets()
    with pytest.raises(moex.ConfigError, match="d_mlp >= 2"):
        make_config("tiny", "toy-square", d_mlp=1)

    model = GPT(cfg)
    x = torch.randint(0, 32, (2, 16))
    code = model.mlp_code(x, 1)
    assert torch.allclose(model.h[1].mlp.decode(code), model.h[1].mlp(model.mlp_input(x, 1))[0].reshape(32, -1),
                          atol=1e-6)

    run = tmp_path / "run"
    tcfg = TrainConfig(max_steps=4, batch_size=4, lr=1e-3, warmup_steps=1, eval_interval=2, eval_batches=1,
                       log_interval=1, ckpt_interval=2, data=str(chess_blocks_dir), device="cpu")
    last = train(run, cfg, tcfg, progress=False)
    assert last["step"] == 4 and last["val_loss"] > 0
    assert {"l0_l0", "l0_max_act", "l1_l0", "l1_max_act"} <= set(last)  # the kind's own statistics, logged
    assert "l1_max_act" in (run / "metrics.csv").read_text().splitlines()[0]

    s = summarize(GPT.from_pretrained(run))
    assert s["layers"][0]["mlp"] == "toy-square" and s["layers"][0]["code_width"] == 128
    assert s["total_params"] == s["active_params"]
    assert main(["model", "summary", "--preset", "tiny", "--mlp", "toy-square-narrow", "n_layer=2"]) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "mlp toy-square" in printed and f"{s['total_params']:,}" in printed

    games = open(chess_games_dir / "games.txt").read().split("\n")[:30]
    res = score_chess(GPT.from_pretrained(run), games, layer=1)
    assert res["features"] == 128 and res["site"] == "mlp" and 0 <= res["coverage"] <= 1
    assert 0 < res["mean_l0"] <= 128
