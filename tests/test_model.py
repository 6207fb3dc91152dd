"""Model zoo tests: every formula of METHODS sec 1-2 against an independent computation."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moex import ConfigError
from moex.cli import main
from moex.model import GPT, MoE, load_balance_loss, make_config, summarize_config
from moex.model.mlp import DenseMLP, GegluMLP
from moex.model.mlp_ops import solu, topk_activation
from moex.model.moe import SparsityRouter


def small_moe(router="sparsity", act="relu", d=16, D=8, M=4, k=2, **kw):
    cfg = make_config("tiny", "moe", d_model=d, n_head=2, n_experts=M, d_expert=D, moe_top_k=k,
                      router=router, expert_act=act, **kw)
    torch.manual_seed(0)
    return MoE(cfg), cfg


def test_sparsity_router_logits_match_brute_force():
    moe, _ = small_moe()
    with torch.no_grad():
        moe.w_enc.add_(torch.randn_like(moe.w_enc) * 0.1 + 0.01)
    x = torch.randn(5, 16)
    logits = moe.router(x, moe.w_enc)
    w = moe.w_enc.detach().double().numpy()  # (M, d, D): expert j's W_enc is w[j].T (D x d)
    xs = x.double().numpy()
    for n in range(5):
        for j in range(4):
            rows = w[j].T  # (D, d), one row per hidden unit
            mu = [sum(rows[r][i] for r in range(rows.shape[0])) / rows.shape[0] for i in range(16)]
            var = [sum((rows[r][i] - mu[i]) ** 2 for r in range(rows.shape[0])) / rows.shape[0]
                   for i in range(16)]
            mu_h = sum(mu[i] * xs[n][i] for i in range(16))
            s_h = math.sqrt(sum(var[i] * xs[n][i] ** 2 for i in range(16)) + 1e-6)
            expected = -math.erf(mu_h / (math.sqrt(2) * s_h))
            assert logits[n, j].item() == pytest.approx(expected, abs=1e-5)


def test_router_std_literal_option():
    moe, cfg = small_moe(router_std="literal")
    x = torch.randn(3, 16)
    mu_h, s_h = moe.router.moments(x, moe.w_enc)
    var = moe.w_enc.detach().var(-1, unbiased=False)
    assert torch.allclose(s_h, (x * x) @ var.T + cfg.router_eps, atol=1e-6)


def gaussian_experts(M=8, d=64, D=512, seed=0):
    """Experts whose W_enc rows are i.i.d. Gaussian with expert-specific column means/stds."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(M, d, 1, generator=g) * 0.05
    sd = 0.02 + torch.rand(M, d, 1, generator=g) * 0.1
    return mu + sd * torch.randn(M, d, D, generator=g)


def counted_l0(x, w_enc):
    return (torch.einsum("nd,mdD->nmD", x, w_enc) > 0).sum(-1).float()


def test_expected_l0_tracks_counted_l0():
    w_enc = gaussian_experts()
    x = torch.randn(256, 64)
    router = SparsityRouter(make_config("tiny", "moex"))
    est = router.expected_l0(x, w_enc).flatten()
    counted = counted_l0(x, w_enc).flatten()
    r = np.corrcoef(est.numpy(), counted.numpy())[0, 1]
    print(f"correlation(D*Phi(mu_h/s_h), counted l0) = {r:.4f}")
    assert r > 0.95
    assert (est - counted).abs().mean() / 512 < 0.05


def test_sparsity_router_picks_sparsest_expert():
    hits, trials, M = 0, 0, 8
    router = SparsityRouter(make_config("tiny", "moex"))
    for seed in range(10):
        w_enc = gaussian_experts(M=M, seed=seed)
        x = torch.randn(64, 64, generator=torch.Generator().manual_seed(100 + seed))
        pick = router(x, w_enc).argmax(-1)
        sparsest = counted_l0(x, w_enc).argmin(-1)
        hits += (pick == sparsest).sum().item()
        trials += x.shape[0]
    rate = hits / trials
    print(f"sparsity router picked the sparsest of {M} experts in {rate:.1%} of cases (chance {1 / M:.1%})")
    assert rate > 0.6


@pytest.mark.parametrize("router", ["sparsity", "linear"])
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_wide_sparse_code_reconstructs_output(router, act):
    moe, _ = small_moe(router=router, act=act)
    x = torch.randn(2, 7, 16)
    y, _ = moe(x)
    code = moe.code(x)
    z = code.to_dense()
    assert z.shape == (14, 4 * 8)
    w_dec = torch.cat([moe.w_dec[j] for j in range(4)], dim=0)  # (M*D, d) mega-decoder
    assert torch.allclose(z @ w_dec, y.reshape(14, 16), atol=1e-6)
    # exactly k experts non-zero per token, each block = gate * relu/gelu(W_enc x)
    _, experts, gates = moe.route(x.reshape(14, 16))
    for n in range(14):
        for s in range(2):
            j = experts[n, s]
            ref = gates[n, s] * moe.act(x.reshape(14, 16)[n] @ moe.w_enc[j])
            assert torch.allclose(z[n, j * 8:(j + 1) * 8], ref, atol=1e-6)
    assert ((z.reshape(14, 4, 8) != 0).any(-1).sum(-1) <= 2).all()


def test_gradients_reach_w_enc_through_the_gate():
    moe, _ = small_moe()
    x = torch.randn(32, 16)
    logits, _, gates = moe.route(x)
    gates.pow(2).sum().backward()  # depends on W_enc only through the router statistics
    assert moe.w_enc.grad is not None and moe.w_enc.grad.abs().sum() > 0


def test_load_balance_loss_hand_worked():
    # 4 tokens, 2 experts. argmax: e0, e0, e1, e0 -> f = (3/4, 1/4)
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0 - 1.0]])
    p = torch.softmax(logits, -1)
    P = p.mean(0)
    expected = 0.001 * 2 * (0.75 * P[0] + 0.25 * P[1])
    assert load_balance_loss(logits, 0.001).item() == pytest.approx(expected.item(), rel=1e-6)
    # uniform routing gives coef exactly (the loss' minimum under balanced assignment)
    balanced = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert load_balance_loss(balanced, 1.0).item() == pytest.approx(1.0, rel=1e-6)


def test_topk_activation_hand_example():
    pre = torch.tensor([[0.5, -1.0, 3.0, 2.0, -0.2]])
    assert torch.equal(topk_activation(pre, 2), torch.tensor([[0.0, 0.0, 3.0, 2.0, 0.0]]))
    # negative winners are clipped by the ReLU
    pre = torch.tensor([[-0.5, -1.0, -3.0]])
    assert torch.equal(topk_activation(pre, 1), torch.zeros(1, 3))


def test_solu_hand_example():
    pre = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    assert torch.allclose(solu(pre), torch.tensor([[0.0, math.log(3.0) * 0.75]]))
    cfg = make_config("tiny", "solu", d_model=4, n_head=1, d_mlp=2)
    mlp = DenseMLP(cfg)
    x = torch.randn(3, 4)
    pre = x @ mlp.c_fc.weight.T
    mid = pre * torch.softmax(pre, -1)
    post = (mid - mid.mean(-1, keepdim=True)) / torch.sqrt(mid.var(-1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(mlp(x)[0], post @ mlp.c_proj.weight.T, atol=1e-5)


def test_geglu_hand_example():
    cfg = make_config("tiny", "geglu", d_model=2, n_head=1, geglu_hidden=2)
    mlp = GegluMLP(cfg)
    with torch.no_grad():
        mlp.w_gate.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        mlp.w_in.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
        mlp.c_proj.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 2.0]])
    gelu1 = 0.5 * 1.0 * (1 + math.erf(1 / math.sqrt(2)))
    gelu2 = 0.5 * 2.0 * (1 + math.erf(2 / math.sqrt(2)))
    assert torch.allclose(mlp(x)[0], torch.tensor([[gelu1 * 2.0, gelu2 * -2.0]]), atol=1e-6)
    assert make_config("chess-8l", "geglu").code_width == 2728  # 2/3 * 4096, multiple of 8


@pytest.mark.parametrize("router", ["sparsity", "linear"])
def test_grouped_path_equals_loop_path(router):
    moe_g, cfg = small_moe(router=router, M=8, D=16, d=32)
    moe_l, _ = small_moe(router=router, M=8, D=16, d=32)
    moe_l.load_state_dict(moe_g.state_dict())
    moe_g.dispatch, moe_l.dispatch = "grouped", "loop"
    x = torch.randn(3, 20, 32)
    yg, ag = moe_g(x)
    yl, al = moe_l(x)
    assert torch.allclose(yg, yl, atol=1e-6)
    (yg.square().sum() + ag).backward()
    (yl.square().sum() + al).backward()
    for (n, pg), (_, pl) in zip(moe_g.named_parameters(), moe_l.named_parameters()):
        assert torch.allclose(pg.grad, pl.grad, atol=1e-6), n


def test_no_token_dropping_when_one_expert_is_overloaded():
    moe, _ = small_moe(router="linear", M=4, k=1)
    with torch.no_grad():
        moe.router.w_g.weight.zero_()
        moe.router.w_g.weight[2, 0] = 10.0
    x = torch.randn(50, 16).abs()  # every token routed to expert 2
    y, _ = moe(x)
    ref = F.relu(x @ moe.w_enc[2]) @ moe.w_dec[2]
    assert torch.allclose(y, ref, atol=1e-6)
    assert moe.last_stats["tokens_per_expert"].tolist() == [0, 0, 50, 0]


def test_moe_stats():
    moe, _ = small_moe()
    x = torch.randn(40, 16)
    moe(x)
    s = moe.last_stats
    assert s["tokens_per_expert"].sum().item() == 80
    assert 0 <= s["l0"].item() <= 8
    assert 0 <= s["router_entropy"].item() <= math.log(4) + 1e-6


def test_model_mlp_code_matches_block_output():
    for mlp in ["gelu", "relu", "topk", "geglu", "solu", "switch", "moex"]:
        torch.manual_seed(0)
        model = GPT(make_config("tiny", mlp))
        idx = torch.randint(0, 32, (2, 30))
        x = model.mlp_input(idx, 2)
        y, _ = model.h[2].mlp(x)
        code = model.mlp_code(idx, 2)
        assert torch.allclose(model.h[2].mlp.decode(code), y.reshape(60, -1), atol=1e-5), mlp
        assert model.mlp_code(idx, 2, dense=True).shape == (60, model.cfg.code_width)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("nope")
    with pytest.raises(ConfigError, match="unknown model key"):
        make_config("tiny", n_layers=3)
    with pytest.raises(ConfigError, match="router"):
        make_config("tiny", "moe", router="hash")


def summary_json(capsys, *args):
    """The summary as the CLI prints it (``--json``) equals the library's."""
    assert main(["model", "summary", "--json", *args]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(summarize_config(args[1], args[3])))
    return printed


def test_summary_parameter_matching(capsys):
    dense = summary_json(capsys, "--preset", "chess-8l", "--mlp", "gelu")
    moex = summary_json(capsys, "--preset", "chess-8l", "--mlp", "moex")
    switch = summary_json(capsys, "--preset", "chess-8l", "--mlp", "switch")
    print("dense", dense["total_params"], dense["active_params"])
    print("moex", moex["total_params"], moex["active_params"])
    print("switch", switch["total_params"], switch["active_params"])
    assert dense["total_params"] == dense["active_params"]
    router_params = sum(layer["router_params"] for layer in switch["layers"])
    assert moex["active_params"] == dense["active_params"]  # sparsity router has no parameters
    assert switch["active_params"] - dense["active_params"] == router_params == 8 * 8 * 512
    assert moex["total_params"] - moex["active_params"] == 8 * 6 * 2 * 512 * 2048
    assert moex["layers"][6]["code_width"] == 8 * 2048


def test_moe_expert_activation_follows_config():
    moe, _ = small_moe(act="relu2")
    x = torch.randn(6, 16)
    code = moe.code(x)
    _, experts, gates = moe.route(x)
    for n in range(6):
        for s in range(2):
            j = experts[n, s]
            expected = gates[n, s] * torch.relu(x[n] @ moe.w_enc[j]).square()
            assert torch.allclose(code.values[n, s], expected, atol=1e-6)


@pytest.mark.parametrize("impl", ["torch.nn.functional.grouped_mm", "torch._grouped_mm"])
def test_each_grouped_matmul_path_equals_the_loop(impl, monkeypatch):
    """The public grouped_mm and the private torch._grouped_mm (older torch may have only that one)
    give the per-expert loop's output and gradients; neither silently falls back to the loop."""
    import torch.nn.functional as F

    import moex.model.moe as moe_mod

    fn = F.grouped_mm if impl.startswith("torch.nn") else torch._grouped_mm
    calls = []
    monkeypatch.setattr(moe_mod, "GROUPED_MM", lambda *a, **k: calls.append(1) or fn(*a, **k))
    moe_g, _ = small_moe(M=8, D=16, d=32, moe_dispatch="grouped")
    moe_l, _ = small_moe(M=8, D=16, d=32, moe_dispatch="loop")
    moe_l.load_state_dict(moe_g.state_dict())
    x = torch.randn(3, 10, 32)
    yg, yl = moe_g(x)[0], moe_l(x)[0]
    assert calls and torch.allclose(yg, yl, atol=1e-5)
    yg.square().sum().backward()
    yl.square().sum().backward()
    assert torch.allclose(moe_g.w_enc.grad, moe_l.w_enc.grad, atol=1e-5)
    assert torch.allclose(moe_g.w_dec.grad, moe_l.w_dec.grad, atol=1e-5)


def test_grouped_matmul_lookup_prefers_public_then_private(monkeypatch):
    import torch.nn.functional as F

    from moex.model.moe import find_grouped_mm

    assert find_grouped_mm()[0] == "torch.nn.functional.grouped_mm"
    monkeypatch.delattr(F, "grouped_mm")
    assert find_grouped_mm()[0] == "torch._grouped_mm"  # torch versions without the public name
    monkeypatch.delattr(torch, "_grouped_mm")
    assert find_grouped_mm() == ("loop", None)
