"""Monet-HD/VD and PEER against brute-force computations over every expert (pair) on small shapes."""

import json
import math
from statistics import NormalDist

import pytest
import torch
import torch.nn.functional as F

from moex import ConfigError, run_training
from moex.config import parse_overrides
from moex.model import load_model, make_config, summarize_config
from moex.model.mlp_ops import product_key_topk, relu2
from moex.model.monet import MonetMLP
from moex.model.peer import PEER

D_MODEL = 16


def monet(kind, E=6, m=4, H=2, k=2, seed=0):
    cfg = make_config("tiny", kind, d_model=D_MODEL, n_head=2, n_experts=E, d_expert=m, moe_heads=H,
                      moe_top_k=k)
    torch.manual_seed(seed)
    layer = MonetMLP(cfg).double()
    return layer, cfg


def peer(N=36, h=3, k=4, d_key=8, seed=0):
    cfg = make_config("tiny", "peer", d_model=D_MODEL, n_head=2, n_experts=N, moe_heads=h, moe_top_k=k,
                      d_key=d_key)
    torch.manual_seed(seed)
    return PEER(cfg).double(), cfg


def reference_gates(logits, k_over_e):
    """Monet's gate written out: batch-norm per head over (tokens, experts), threshold, softmax."""
    n, H, E = logits.shape
    sigma = NormalDist().inv_cdf(1 - k_over_e)
    out = torch.zeros_like(logits)
    for h in range(H):
        block = logits[:, h]
        mean = block.mean()
        var = ((block - mean) ** 2).mean()
        normed = (block - mean) / torch.sqrt(var + 1e-5)
        for t in range(n):
            cut = min(normed[t].max().item(), sigma)
            keep = [i for i in range(E) if normed[t, i] >= cut]
            w = torch.softmax(block[t, keep], dim=0)
            for i, wi in zip(keep, w):
                out[t, h, i] = wi
    return out


def test_monet_router_matches_written_out_rule():
    layer, cfg = monet("monet-hd", E=8, k=2)
    layer.train()
    x = torch.randn(7, D_MODEL, dtype=torch.float64)
    g1, g2, l1, l2 = layer.router(x)
    assert torch.allclose(g1.double(), reference_gates(l1.double(), 2 / 8), atol=1e-6)
    assert torch.allclose(g2.double(), reference_gates(l2.double(), 2 / 8), atol=1e-6)
    assert ((g1 > 0).sum(-1) >= 1).all()


def monet_brute_force(layer, x):
    """y = sum_h sum_(i,j) g1[h,i] g2[h,j] expert_(i,j)(x), looping over every expert pair."""
    g1, g2, _, _ = layer.router(x)
    E, m = layer.n, layer.m
    d = x.shape[1]
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for h in range(layer.heads):
            for i in range(E):
                for j in range(E):
                    w = g1[t, h, i] * g2[t, h, j]
                    if w == 0:
                        continue
                    if layer.vertical:
                        half = m // 2
                        a = relu2(layer.u1.weight[i * half:(i + 1) * half] @ x[t])
                        b = relu2(layer.u2.weight[j * half:(j + 1) * half] @ x[t])
                        v = layer.v
                        top = a @ v[0, i * half:(i + 1) * half] + b @ v[1, i * half:(i + 1) * half]
                        bottom = a @ v[2, j * half:(j + 1) * half] + b @ v[3, j * half:(j + 1) * half]
                        out = torch.cat((top, bottom))
                    else:
                        hidden = relu2(layer.u.weight[i * m:(i + 1) * m] @ x[t])
                        out = hidden @ layer.v[j * m:(j + 1) * m]
                    assert out.shape == (d,)
                    y[t] += w * out
    return y


@pytest.mark.parametrize("kind", ["monet-hd", "monet-vd"])
def test_monet_equals_sum_over_all_expert_pairs(kind):
    layer, cfg = monet(kind)
    layer.eval()  # fixed BatchNorm statistics: the rule is per token
    with torch.no_grad():
        layer.router.norm1.running_mean.normal_()
        layer.router.norm2.running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x[None])
        ref = monet_brute_force(layer, x)
        code = layer.code(x)
    assert torch.allclose(y[0], ref, atol=1e-10)
    assert code.width == cfg.code_width
    assert torch.allclose(layer.decode(code), ref, atol=1e-10)


def test_product_key_topk_equals_brute_force_over_all_pairs():
    torch.manual_seed(1)
    n, h, c, k = 9, 3, 5, 6
    q1, q2 = torch.randn(4, h, c, dtype=torch.float64), torch.randn(4, h, c, dtype=torch.float64)
    k1, k2 = torch.randn(h, n, c, dtype=torch.float64), torch.randn(h, n, c, dtype=torch.float64)
    scores, idx = product_key_topk(q1, q2, k1, k2, k)
    for t in range(4):
        for hh in range(h):
            full = [(q1[t, hh] @ k1[hh, a] + q2[t, hh] @ k2[hh, b]).item() for a in range(n) for b in range(n)]
            best = sorted(range(n * n), key=lambda e: -full[e])[:k]
            assert idx[t, hh].tolist() == best
            assert scores[t, hh].tolist() == pytest.approx([full[e] for e in best], abs=1e-12)


def test_peer_equals_brute_force_retrieval():
    layer, cfg = peer()
    layer.eval()
    x = torch.randn(5, D_MODEL, dtype=torch.float64)
    n = layer.n_keys
    with torch.no_grad():
        y, _ = layer(x[None])
        code = layer.code(x)
        q = layer.query_norm(layer.query(x)).reshape(5, layer.heads, -1)
        ref = torch.zeros_like(x)
        for t in range(5):
            for h in range(layer.heads):
                q1, q2 = q[t, h].chunk(2)
                s = torch.tensor([q1 @ layer.keys[0, h, e // n] + q2 @ layer.keys[1, h, e % n]
                                  for e in range(cfg.n_experts)], dtype=torch.float64)
                top, experts = s.topk(layer.top_k)
                for g, e in zip(torch.softmax(top, 0), experts):
                    ref[t] += g * F.gelu(layer.u[e] @ x[t]) * layer.v[e]
    assert torch.allclose(y[0], ref, atol=1e-10)
    assert torch.allclose(code.to_dense() @ layer.v, ref, atol=1e-10)
    assert code.width == cfg.code_width == cfg.n_experts


def test_peer_gather_path_equals_dense_scores_path():
    layer, _ = peer(N=64, h=2, k=3)
    layer.train()
    x = torch.randn(2, 5, D_MODEL, dtype=torch.float64)
    grads = []
    for gather in (False, True):
        layer.gather = gather
        layer.zero_grad()
        torch.manual_seed(0)
        y, _ = layer(x)
        y.square().sum().backward()
        grads.append((y.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()}))
    (y0, g0), (y1, g1) = grads
    assert torch.allclose(y0, y1, atol=1e-12)
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-10), n


@pytest.mark.parametrize("kind", ["monet-hd", "monet-vd", "peer"])
def test_gradients_reach_routers_keys_and_experts(kind):
    layer, _ = peer() if kind == "peer" else monet(kind)
    layer.train()
    y, aux = layer(torch.randn(2, 6, D_MODEL, dtype=torch.float64))
    loss = y.square().sum() + (aux if aux is not None else 0)
    loss.backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_matching():
    counts = {}
    for mlp in ["gelu", "monet-hd", "monet-vd", "peer", "moex"]:
        s = summarize_config("chess-8l", mlp)
        counts[mlp] = (s["total_params"], s["active_params"])
    print(counts)
    assert counts["monet-hd"] == counts["monet-vd"] == counts["gelu"]
    d, layers, h, k, n, d_key = 512, 8, 32, 48, 128, 128
    # PEER: query (d h d_key) + its BatchNorm (2 h d_key) + sub-keys (h n d_key) + h k retrieved neurons of 2 d
    per_layer = d * h * d_key + 2 * h * d_key + h * n * d_key + h * k * 2 * d
    assert abs(per_layer - 2 * d * 4096) / (2 * d * 4096) < 0.005  # matched to the dense MLP
    assert counts["peer"][1] == counts["gelu"][1] - layers * 2 * d * 4096 + layers * per_layer
    assert counts["peer"][0] == counts["peer"][1] + layers * (n * n * 2 * d - h * k * 2 * d)


def test_config_errors_for_fine_grained():
    with pytest.raises(ConfigError, match="square"):
        make_config("tiny", "peer", n_experts=1000)
    with pytest.raises(ConfigError, match="no expert width"):
        make_config("tiny", "monet-hd")  # 512 half-experts leave no width in a 1024-wide tiny MLP
    with pytest.raises(ConfigError, match="even"):
        make_config("tiny", "monet-vd", n_experts=64, d_expert=3)


@pytest.mark.parametrize("kind,over", [("monet-hd", ["n_experts=64"]), ("monet-vd", ["n_experts=64"]),
                                       ("peer", ["n_experts=4096", "moe_heads=8", "moe_top_k=16", "d_key=32"])])
def test_short_cpu_training_loss_falls(kind, over, chess_blocks_dir, tmp_path):
    out = tmp_path / kind
    settings = parse_overrides(["n_layer=2", "max_steps=40", "batch_size=8", "eval_interval=40", "eval_batches=2",
                                "log_interval=5", "warmup_steps=5", "lr=1e-3", *over])
    run_training(out, "tiny", kind, {**settings, "data": str(chess_blocks_dir)}, progress=False)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train = [r["train_loss"] for r in rows if "train_loss" in r]
    print(kind, train, {k: v for k, v in rows[-1].items() if k.startswith("l1_")})
    # every layer logs its own statistics (Monet: l0 of its code and the routing entropy)
    assert rows[-1]["l1_l0"] > 0 and ("l1_entropy" in rows[-1]) == kind.startswith("monet")
    assert train[-1] < train[0] - 0.5
    assert train[-1] < math.log(32)
    assert load_model(out).cfg.mlp == kind
