"""GPU tests (``-m gpu``, skipped without CUDA): the fast MoE path equals the reference path."""

import pytest
import torch

from moex.model import GPT, make_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def pair(router: str):
    """The same MoE model twice: grouped-matmul dispatch and the per-expert loop."""
    cfg = dict(n_layer=2, n_head=4, d_model=256, d_mlp=1024, ctx=128, router=router)
    torch.manual_seed(0)
    fast = GPT(make_config("tiny", "moe", moe_dispatch="grouped", **cfg)).cuda()
    ref = GPT(make_config("tiny", "moe", moe_dispatch="loop", **cfg)).cuda()
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@pytest.mark.parametrize("router", ["sparsity", "linear"])
@pytest.mark.parametrize("compiled", [False, True])
def test_fast_path_equals_reference_forward_and_gradients(router, compiled):
    fast, ref = pair(router)
    x = torch.randint(0, 32, (8, 128), device="cuda")
    y = torch.roll(x, -1, 1)
    outs = {}
    for name, model in (("fast", fast), ("ref", ref)):
        fwd = torch.compile(model) if compiled and name == "fast" else model
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(x, y)
        (out.loss + out.aux_loss).backward()
        outs[name] = (out.logits.float(), {n: p.grad.float() for n, p in model.named_parameters()})
    (lf, gf), (lr, gr) = outs["fast"], outs["ref"]
    # both run bf16 matmuls; they differ only in accumulation order
    assert torch.allclose(lf, lr, atol=3e-2, rtol=3e-2)
    for n in gf:
        scale = gr[n].abs().max().clamp_min(1e-6)
        assert ((gf[n] - gr[n]).abs().max() / scale) < 5e-2, n


def test_no_host_sync_in_moe_forward():
    fast, _ = pair("sparsity")
    x = torch.randint(0, 32, (4, 128), device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast.h[0].mlp(fast.embed(x))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_browser_site_on_cuda_equals_the_cpu_site(tmp_path):
    """The browser's statistics on the GPU: the same pages as on the CPU (fp32 throughout)."""
    from moex.browse.build import BrowseConfig, build_site, read_site_data
    from moex.data.chess.selfplay import SelfPlayConfig, generate_games

    games = generate_games(12, tmp_path / "games", SelfPlayConfig(engine="random"), seed=0, progress=False)
    torch.manual_seed(0)
    GPT(make_config("tiny", "moex", n_layer=2)).save_pretrained(tmp_path / "run")
    cfg = BrowseConfig(top=3)
    for device in ("cpu", "cuda"):
        build_site(tmp_path / "run", tmp_path / device, games=games, layer=1, cfg=cfg, device=device, progress=False)
    cpu, gpu = (read_site_data(tmp_path / d / "data" / "index.js")["features"] for d in ("cpu", "cuda"))
    assert cpu["id"] == gpu["id"] and cpu["frequency"] == gpu["frequency"]
    assert max(abs(a - b) for a, b in zip(cpu["f_max"], gpu["f_max"])) < 1e-3
    assert sum(a != b for a, b in zip(cpu["best_bsp"], gpu["best_bsp"])) <= len(cpu["id"]) // 100  # near-ties
