"""Hugging Face adapters on tiny random-weight models built from real transformers configs: the captured
expert hidden units, pushed through each expert's down projection and weighted by the captured router
weights, reproduce the experts module's output; the routed tokens are the router's top-k. A hook on the
wrong module or layer fails these checks."""

import pytest
import torch

from moex import MoexError, collect, site_for
from moex.interp.hf_readers import HFModel

transformers = pytest.importorskip("transformers")

COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)
MOE = {
    "olmoe": dict(num_experts=6, num_experts_per_tok=2),
    "qwen2_moe": dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16,
                      shared_expert_intermediate_size=24, decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3_moe": dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16, decoder_sparse_step=1,
                      mlp_only_layers=[]),
    "mixtral": dict(num_local_experts=6, num_experts_per_tok=2),
    "granitemoe": dict(num_local_experts=6, num_experts_per_tok=2),
    "deepseek_v3": dict(n_routed_experts=6, num_experts_per_tok=2, moe_intermediate_size=16, first_k_dense_replace=0,
                        n_group=1, topk_group=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
                        qk_nope_head_dim=8, v_head_dim=8, n_shared_experts=1, num_key_value_heads=4),
    "deepseek_v2": dict(n_routed_experts=6, num_experts_per_tok=2, moe_intermediate_size=16, first_k_dense_replace=0,
                        n_group=1, topk_group=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
                        qk_nope_head_dim=8, v_head_dim=8, n_shared_experts=1, num_key_value_heads=4),
}
DENSE = {"llama": {}, "qwen2": {}, "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=97)}


def tiny(model_type: str, **kw):
    torch.manual_seed(0)
    base = {} if model_type == "gpt2" else COMMON
    cfg = transformers.AutoConfig.for_model(model_type, **{**base, **kw})
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    for p in model.parameters():  # some classes initialise the expert weights to zero
        torch.nn.init.normal_(p, std=0.2)
    return HFModel(model.float())


@pytest.mark.parametrize("model_type", list(MOE))
def test_moe_capture_reproduces_the_experts_output(model_type):
    hf = tiny(model_type, **MOE[model_type])
    assert hf.kinds == ["moe", "moe"]
    idx = torch.randint(0, 97, (2, 11))
    for layer in range(2):
        cap = hf.capture(idx, layer)
        n = idx.numel()
        assert cap.x.shape == (n, 32) and cap.top_k_index.shape == (n, 2)
        recon = torch.zeros_like(cap.output)
        w = cap.router_weights()
        for e in range(cap.n_experts):
            token, out = cap.expert_output(e)
            recon.index_add_(0, token, out * w[token, e, None])
        assert torch.allclose(recon, cap.output, atol=1e-5), (model_type, layer, (recon - cap.output).abs().max())
        # the routed token sets are the router's own top-k on the captured input
        gate = getattr(hf.mlp(layer), "gate", None) or hf.mlp(layer).router
        out = gate(cap.x)
        top = out[2] if len(out) == 3 else out[1]
        for e in range(cap.n_experts):
            assert set(cap.expert_tokens(e).tolist()) == set(torch.where((top == e).any(-1))[0].tolist())
        # the wide code, decoded by the concatenated down projections, is the same output
        down = cap.experts.module.down_proj  # (E, d, I)
        z = cap.wide_code().reshape(n, cap.n_experts, -1)
        assert torch.allclose(torch.einsum("nei,edi->nd", z, down), cap.output, atol=1e-5)
    # a capture of the other layer does not reproduce this one: the hook is on the right module
    a, b = hf.capture(idx, 0), hf.capture(idx, 1)
    assert not torch.allclose(a.output, b.output, atol=1e-3)


@pytest.mark.parametrize("model_type", list(DENSE))
def test_dense_capture_is_the_down_projections_input(model_type):
    hf = tiny(model_type, **DENSE[model_type])
    assert hf.kinds == ["dense", "dense"]
    idx = torch.randint(0, 97, (2, 9))
    cap = hf.capture(idx, 1)
    mlp = hf.layers[1].mlp
    proj = mlp.down_proj if hasattr(mlp, "down_proj") else mlp.c_proj
    assert torch.allclose(proj(cap.hidden), cap.output, atol=1e-5)
    site = site_for(hf, "mlp", layer=1)
    chunk = next(collect(site, idx.tolist(), batch=2))
    assert chunk.features.shape == (2, 9, site.width) and torch.allclose(chunk.features.reshape(18, -1), cap.hidden)


def test_moe_site_streams_the_wide_code():
    hf = tiny("olmoe", **MOE["olmoe"])
    site = site_for(hf, "mlp", layer=0)
    assert site.width == 6 * 16
    idx = torch.randint(0, 97, (3, 7))
    feats = torch.cat([c.features for c in collect(site, idx.tolist(), batch=2)])
    assert feats.shape == (3, 7, 96)
    assert ((feats.reshape(21, 6, 16) != 0).any(-1).sum(-1) <= 2).all()  # at most top-2 experts per token


def test_bad_input():
    with pytest.raises(MoexError, match="GptOssForCausalLM: .*supported: OlmoeForCausalLM"):
        tiny("gpt_oss", num_local_experts=4, num_experts_per_tok=2, head_dim=8, layer_types=["full_attention"] * 2)
    hf = tiny("llama")
    with pytest.raises(MoexError, match="layer 5 out of range: LlamaForCausalLM has layers 0..1"):
        hf.capture(torch.zeros(1, 3, dtype=torch.long), 5)


@pytest.mark.parametrize("mlp", ["moex", "switch"])
def test_moex_reader_reproduces_our_moe_layer(mlp):
    from moex import GPT, make_config
    from moex.interp.readers import MoexReader

    torch.manual_seed(0)
    model = GPT(make_config("tiny", mlp, n_layer=2))
    with torch.no_grad():
        for b in model.h:
            b.mlp.w_enc.add_(0.05 * torch.randn_like(b.mlp.w_enc))
    reader = MoexReader(model)
    idx = torch.randint(0, 32, (2, 13))
    cap = reader.capture(idx, 1)
    w = cap.router_weights()
    recon = torch.zeros_like(cap.output)
    for e in range(cap.n_experts):
        token, out = cap.expert_output(e)
        recon.index_add_(0, token, out * w[token, e, None])
    assert torch.allclose(recon, cap.output, atol=1e-5)
    assert torch.allclose(cap.wide_code(), model.mlp_code(idx, 1, dense=True), atol=1e-6)  # the MoE-X reading
    act = cap.expert_activation()
    n, e = 5, int(cap.top_k_index[5, 0])
    slot = (cap.top_k_index[n] == e).nonzero()[0, 0]
    units = model.h[1].mlp.act(cap.x[n] @ model.h[1].mlp.w_enc[e])
    by_hand = cap.top_k_weights[n, slot] * (units @ model.h[1].mlp.w_dec[e]).norm()
    assert act[n, e].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert (act[n] > 0).sum() == 2  # top-2: the other experts score 0


def test_top_windows_per_expert_against_a_loop():
    from moex.interp.readers import top_windows

    hf = tiny("olmoe", **MOE["olmoe"])
    rng = torch.Generator().manual_seed(1)
    lengths = torch.randint(20, 60, (30,), generator=rng)
    docs = [torch.randint(0, 97, (int(n),), generator=rng).tolist() for n in lengths]
    res = top_windows(hf, docs, layer=1, window=16, top=5, batch=4)
    assert res.windows.shape[1] == 16 and len(res.windows) == sum(len(d) >= 16 for d in docs)
    for w in (0, 7):  # brute force: one window at a time
        act = hf.capture(res.windows[w:w + 1], 1).expert_activation()
        assert torch.allclose(act.amax(0), res.scores[w], atol=1e-5)
    for e, idx in res.top.items():
        assert len(idx) == 5 and res.scores[idx, e].tolist() == sorted(res.scores[:, e].tolist(), reverse=True)[:5]
        assert torch.allclose(res.activations[e].amax(1), res.scores[idx, e])
    with pytest.raises(MoexError, match="not an MoE layer"):
        top_windows(tiny("llama"), docs, layer=0)


def test_clamped_swiglu_is_read_through_the_class_own_activation():
    """DeepSeek-V4 clamps gate and up at swiglu_limit inside its experts: moex reads them through the class's
    own ``_apply_gate``, so the recomputed routed output equals the module's (and a plain act(gate) * up
    would not: the clamp bites at this limit)."""
    import torch.nn.functional as F

    hf = tiny("deepseek_v4", num_local_experts=6, num_experts_per_tok=2, swiglu_limit=0.05)
    idx = torch.randint(0, 97, (2, 11))
    for layer in range(2):
        cap = hf.capture(idx, layer)  # checks itself
        assert torch.allclose(cap.routed_output(), cap.output, atol=1e-5)
        e = int(cap.top_k_index[0, 0])
        gate, up = F.linear(cap.x[:4], cap.experts.module.gate_up_proj[e]).chunk(2, dim=-1)
        assert not torch.allclose(cap.experts.module.act_fn(gate) * up, cap.experts.units(e, cap.x[:4]), atol=1e-3)


def test_a_reading_that_disagrees_with_the_layer_is_an_error():
    hf = tiny("olmoe", **MOE["olmoe"])
    experts = hf.mlp(1).experts
    forward = experts.forward
    experts.forward = lambda *a, **k: 1.5 * forward(*a, **k)  # an experts class that computes something else
    idx = torch.randint(0, 97, (1, 7))
    hf.capture(idx, 0)
    with pytest.raises(MoexError, match=r"OlmoeForCausalLM: layer 1's experts do not compute what moex recomputes "
                                        r"from their weights \(max difference .* on outputs up to .*\)"):
        hf.capture(idx, 1)


def test_a_token_routed_twice_to_one_expert_is_listed_once_with_both_weights():
    from moex.interp.readers import FusedExperts, LayerCapture

    hf = tiny("olmoe", **MOE["olmoe"])
    experts = hf.mlp(0).experts
    x = torch.randn(3, 32)
    index = torch.tensor([[1, 1], [0, 2], [2, 1]])
    weights = torch.tensor([[0.3, 0.5], [0.6, 0.4], [0.2, 0.8]])
    cap = LayerCapture("moe", experts(x, index, weights), x=x, top_k_index=index, top_k_weights=weights,
                       experts=FusedExperts(experts))
    assert cap.expert_tokens(1).tolist() == [0, 2]
    assert cap.router_weights()[0].tolist() == pytest.approx([0, 0.8, 0, 0, 0, 0])
    cap.check("olmoe", 0)  # the module's own output: token 0 gets expert 1 at weight 0.3 + 0.5
    assert torch.allclose(cap.routed_output(), cap.output, atol=1e-5)
