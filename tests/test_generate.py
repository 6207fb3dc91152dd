"""Generation: the key-value cache reproduces the full forward for every MLP kind; batched sampling."""

import pytest
import torch

from moex.model import GPT, make_config
from moex.model.generate import generate, next_tokens
from moex.model.gpt import KVCache
from moex.model.layer import mlp_presets

SMALL = {"monet-hd": {"n_experts": 16}, "monet-vd": {"n_experts": 16},
         "peer": {"n_experts": 16 * 16, "moe_heads": 2, "moe_top_k": 4, "d_key": 8}}


def small_model(mlp: str, seed: int = 0) -> GPT:
    cfg = make_config("tiny", mlp, n_layer=2, d_model=32, n_head=2, ctx=64, d_mlp=64, topk_k=8,
                      **SMALL.get(mlp, {}))
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    for p in model.parameters():  # larger weights than the init, so differences would show
        p.data += 0.05 * torch.randn_like(p)
    return model


@pytest.mark.parametrize("mlp", list(mlp_presets()))
def test_cached_logits_equal_full_forward(mlp):
    model = small_model(mlp)
    idx = torch.randint(0, 32, (3, 40), generator=torch.Generator().manual_seed(1))
    full = model(idx).logits
    cache = KVCache(model.cfg, 3, 40)
    parts = [model(idx[:, :17], cache=cache).logits]  # prefill, then one token at a time, then a chunk of 3
    for t in range(17, 37):
        parts.append(model(idx[:, t:t + 1], cache=cache).logits)
    parts.append(model(idx[:, 37:], cache=cache).logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mlp", ["gelu", "moex", "peer"])
def test_left_padded_rows_compute_what_they_would_alone(mlp):
    model = small_model(mlp)
    a, b = torch.randint(0, 32, (1, 30)), torch.randint(0, 32, (1, 21))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 9, dtype=torch.long), b], dim=1)])
    cache = KVCache(model.cfg, 2, 35, pad=torch.tensor([0, 9]))
    out = model(batch, cache=cache).logits
    step = model(torch.tensor([[3], [5]]), cache=cache).logits
    torch.testing.assert_close(out[0], model(a).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, 9:], model(b).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[1, 0], model(torch.cat([b, torch.tensor([[5]])], 1)).logits[0, -1],
                               atol=1e-5, rtol=1e-5)


def greedy_loop(model: GPT, prompt: list[int], n: int) -> list[int]:
    """The plain loop: full forward of the growing sequence, argmax."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


@pytest.mark.parametrize("mlp", ["gelu", "moex"])
def test_batched_greedy_generation_equals_the_plain_loop(mlp):
    model = small_model(mlp)
    prompts = [[15, 5, 4], [15, 6, 4, 20, 21, 22, 0], [15]]
    got = generate(model, prompts, 12)
    assert got == [greedy_loop(model, p, 12) for p in prompts]
    assert generate(model, prompts, 12, use_cache=False) == got


def test_stop_tokens_end_each_row_and_are_kept():
    model = small_model("gelu")
    free = generate(model, [[15, 5, 4]], 10)[0]
    stop = free[3]
    got = generate(model, [[15, 5, 4], [15, 5, 4]], 10, stop={stop})
    first = free.index(stop) + 1
    assert got == [free[:first]] * 2


def test_temperature_sampling_follows_softmax():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    draws = next_tokens(logits, torch.ones(20000), g)
    freq = torch.bincount(draws, minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.015, rtol=0)
    cold = next_tokens(logits[:4], torch.tensor([0.0, 0.0, 1e-4, 0.0]), g)
    assert cold.tolist() == [0, 0, 0, 0]


def test_generate_rejects_prompts_past_the_context():
    model = small_model("gelu")
    with pytest.raises(ValueError, match="context 64"):
        generate(model, [[1] * 60], 10)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [[1], [2]], 3, temperature=[0.5])


def test_cached_router_statistics_follow_training_steps_and_weight_loads():
    """The sparsity router's encoder statistics are reused while no gradient can flow; a training step (in place)
    or a weight load must invalidate them: decoding after each equals a fresh model with the same weights."""
    from moex.model import mlp_ops

    torch.manual_seed(0)
    cfg = make_config("tiny", "moex", n_layer=2, vocab_size=32, ctx=32)
    model = GPT(cfg)
    prompt = torch.randint(0, 32, (2, 6))
    prompts = prompt.tolist()

    def decode(m):
        m.eval()
        with torch.no_grad():
            return generate(m, prompts, 8), m(prompt).logits

    decode(model)  # fills the cache
    assert all(hasattr(b.mlp.w_enc, mlp_ops.ENCODER_STATS) for b in model.h)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    x = torch.randint(0, 32, (4, 16))
    model(x, x).loss.backward()
    opt.step()
    fresh = GPT(cfg)
    fresh.load_state_dict(model.state_dict())
    (tokens, logits), (tokens_ref, logits_ref) = decode(model), decode(fresh)
    assert tokens == tokens_ref and torch.allclose(logits, logits_ref, atol=1e-6)
    torch.manual_seed(1)
    other = GPT(cfg)
    decode(fresh)
    fresh.load_state_dict(other.state_dict())  # a load writes the weights in place: the cache must not survive it
    assert torch.allclose(decode(fresh)[1], decode(other)[1], atol=1e-6)
