"""``export_hf``: every MLP kind, exported and loaded back through ``AutoModelForCausalLM`` (the shipped code,
``trust_remote_code``), computes moex's logits; ``generate()`` continues as moex's sampler does; the exported
tokenizers encode as moex does; the Hugging Face reader and moex's native reader read the same MoE-X; bad input
is refused by name."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from moex import GPT, ExportError, export_hf, make_config
from moex.data.chess.vocab import encode as chess_encode
from moex.interp.hf_readers import HFModel, load_model_or_reader
from moex.interp.readers import MoexReader
from moex.model.generate import generate

transformers = pytest.importorskip("transformers")

FINE = dict(n_experts=16, moe_heads=2, moe_top_k=3, d_key=16)  # small Monet / PEER layers
KINDS = {  # preset -> overrides of the 2-layer tiny chess model
    "gelu": {}, "relu": {}, "topk": dict(topk_k=16), "solu": {}, "geglu": {}, "switch": {}, "moex": {},
    "monet-hd": FINE, "monet-vd": FINE, "peer": FINE,
    "gelu-bias-untied-tanh": dict(bias=True, tie_embeddings=False, gelu_approx="tanh"),
    "moex-literal-relu2": dict(router_std="literal", expert_act="relu2", n_experts=4, moe_top_k=1),
}


def tiny_model(preset: str, seed: int = 0) -> GPT:
    """A random 2-layer model; BatchNorm statistics (Monet, PEER) moved off their initial 0 / 1."""
    torch.manual_seed(seed)
    overrides = dict(KINDS.get(preset, {}))
    cfg = make_config("tiny", preset.split("-bias")[0].split("-literal")[0], n_layer=2, d_mlp=256, **overrides)
    model = GPT(cfg)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, cfg.vocab_size, (4, 32)))
    return model.eval()


def exported(model: GPT, tmp_path, name: str = "hf"):
    model.save_pretrained(tmp_path / "run")
    out = export_hf(tmp_path / "run", tmp_path / name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    return out, hf


@pytest.mark.parametrize("preset", list(KINDS))
def test_logits_equal_moex_for_every_mlp_kind(preset, tmp_path):
    model = tiny_model(preset)
    out, hf = exported(model, tmp_path)
    assert type(hf).__name__ == "MoexForCausalLM" and type(hf).__module__.startswith("transformers_modules")
    idx = torch.randint(0, 32, (3, 48))
    with torch.no_grad():
        ours, theirs = model(idx).logits, hf(idx).logits
    assert (ours - theirs).abs().max() < 1e-5
    loss = hf(idx, labels=idx).loss
    assert torch.allclose(loss, model(idx[:, :-1], targets=idx[:, 1:]).loss, atol=1e-5)
    if preset in ("switch", "moex"):  # transformers' experts kernels (its default) and the file's own loop agree
        names = dict(hf.named_parameters())
        assert names["transformer.h.0.mlp.experts.up_proj"].shape == (8, 128, 128)
        assert hf.config._experts_implementation in ("grouped_mm", "batched_mm")
        hf.set_experts_implementation("eager")
        with torch.no_grad():
            assert (hf(idx).logits - ours).abs().max() < 1e-5
            fresh = transformers.AutoModelForCausalLM.from_config(hf.config, trust_remote_code=True)  # random init
            assert fresh(idx).logits.isfinite().all() and fresh(idx).logits.std() > 0


def test_generate_greedy_equals_moex_sampler(tmp_path):
    model = tiny_model("moex", seed=1)
    out, hf = exported(model, tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    prompts = [tok(p)["input_ids"] for p in (";1.e4 e5 2.Nf3 Nc6 3.", ";1.d4")]
    ours = generate(model, prompts, 40)
    single = hf.generate(torch.tensor([prompts[0]]), max_new_tokens=40, do_sample=False)
    assert single[0, len(prompts[0]):].tolist() == ours[0]
    longest = len(prompts[0])  # a left-padded batch with its attention mask
    ids = torch.zeros(2, longest, dtype=torch.long)
    mask = torch.zeros(2, longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):], mask[i, longest - len(p):] = torch.tensor(p), 1
    batch = hf.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False, pad_token_id=0)
    assert [row[longest:].tolist() for row in batch] == ours
    assert tok.decode(ours[0]) == "".join(" #+-.0123456789;=BKNOQRabcdefghx"[t] for t in ours[0])


def test_exported_model_loads_without_moex(tmp_path):
    """A fresh interpreter in which ``import moex`` fails loads the export and its tokenizer."""
    model = tiny_model("moex", seed=2)
    model.save_pretrained(tmp_path / "run")
    export_hf(tmp_path / "run", tmp_path / "shared-model")
    text = ";1.e4 e5 2.Nf3"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["moex"] = None  # any import of moex now fails
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(tmp_path / 'shared-model')!r}, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'shared-model')!r}, trust_remote_code=True)
        ids = tok({text!r}, return_tensors="pt")["input_ids"]
        torch.save((ids, model(ids).logits.detach()), {str(tmp_path / 'out.pt')!r})
        assert not any(m == "moex" or m.startswith("moex.") for m in sys.modules if sys.modules[m] is not None)
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    ids, logits = torch.load(tmp_path / "out.pt")
    assert ids[0].tolist() == chess_encode(text).tolist()
    with torch.no_grad():
        assert (model(ids).logits - logits).abs().max() < 1e-5


def test_text_tokenizers_encode_as_moex(tmp_path):
    from moex.data.text.tokenizer import TextTokenizer, train_bpe

    sample = "The Tower of London, a  castle of 1078.\n\n It's naïve  — isn't it? "
    bpe = train_bpe([sample * 20, "A second document about towers."], vocab_size=300)
    for name, tokenizer in (("bpe", bpe), ("gpt2", TextTokenizer())):
        if name == "gpt2":
            pytest.importorskip("tiktoken")
        cfg = make_config("tiny", "gelu", n_layer=1, d_mlp=64, vocab_size=tokenizer.vocab_size)
        GPT(cfg).save_pretrained(tmp_path / name)
        tokenizer.save(tmp_path / name)
        out = export_hf(tmp_path / name, tmp_path / f"hf-{name}")
        tok = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)
        assert tok(sample)["input_ids"] == tokenizer.encode(sample), name
        assert tok.decode(tokenizer.encode(sample)) == sample
        config = json.loads((out / "config.json").read_text())
        assert config["eos_token_id"] == tokenizer.eot == tok.eos_token_id
    ckpt = tmp_path / "bpe" / "ckpt-0000005"  # a checkpoint inside a run: the run's tokenizer.json
    GPT.from_pretrained(tmp_path / "bpe").save_pretrained(ckpt)
    out = export_hf(ckpt, tmp_path / "hf-ckpt")
    assert transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)(sample)["input_ids"] == \
        bpe.encode(sample)


@pytest.mark.parametrize("preset", ["moex", "switch"])
def test_hf_reader_on_the_export_equals_the_native_reader(preset, tmp_path):
    model = tiny_model(preset, seed=3)
    out, hf = exported(model, tmp_path)
    native = MoexReader(model)
    readers = [load_model_or_reader(out), HFModel(hf)]  # moex's copy of the code, and the shipped code
    assert isinstance(readers[0], HFModel) and readers[0].kinds == ["moe", "moe"]
    idx = torch.randint(0, 32, (3, 40))
    for layer in (0, 1):
        a = native.capture(idx, layer)
        for reader in readers:
            assert reader.width(layer) == native.width(layer) and reader.n_experts(layer) == 8
            b = reader.capture(idx, layer)
            assert torch.allclose(a.router_weights(), b.router_weights(), atol=1e-5)
            assert torch.allclose(a.expert_activation(), b.expert_activation(), atol=1e-5)
            assert torch.allclose(a.wide_code(), b.wide_code(), atol=1e-5)
            for e in range(8):
                ta, ua = a.expert_units(e)
                tb, ub = b.expert_units(e)
                assert torch.equal(ta, tb) and torch.allclose(ua, ub, atol=1e-5)


def test_dense_exports_are_read_as_dense_mlps(tmp_path):
    model = tiny_model("geglu", seed=4)
    out, _ = exported(model, tmp_path)
    reader = load_model_or_reader(out)
    idx = torch.randint(0, 32, (2, 20))
    hidden = reader.capture(idx, 1).hidden
    assert reader.kinds == ["dense", "dense"]
    assert torch.allclose(hidden, model.mlp_code(idx, 1, dense=True), atol=1e-5)


def test_bad_input(tmp_path):
    with pytest.raises(ExportError, match="not a moex run"):
        export_hf(tmp_path, tmp_path / "out")
    model = tiny_model("gelu")
    model.save_pretrained(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not a moex export"):
        export_hf(tmp_path / "run", tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    out = export_hf(tmp_path / "run", tmp_path / "again")
    (out / "stale.txt").write_text("old")
    export_hf(tmp_path / "run", out)  # an earlier export is replaced whole
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    cfg = make_config("tiny", "gelu", n_layer=1, d_mlp=64, vocab_size=77)
    GPT(cfg).save_pretrained(tmp_path / "odd-vocab")
    with pytest.raises(ExportError, match="vocab_size=77"):
        export_hf(tmp_path / "odd-vocab", tmp_path / "out2")


def test_a_kind_the_exported_code_does_not_know_is_named(tmp_path):
    from moex.model.layer import register_mlp, unregister_mlp
    from moex.model.mlp import DenseMLP

    class Doubled(DenseMLP):
        pass

    register_mlp("doubled", Doubled)
    try:
        GPT(make_config("tiny", "doubled", n_layer=1, d_mlp=64)).save_pretrained(tmp_path / "run")
        with pytest.raises(ExportError, match=r"mlp='doubled' \(Doubled\) cannot be exported"):
            export_hf(tmp_path / "run", tmp_path / "out")
    finally:
        unregister_mlp("doubled")
    assert not (tmp_path / "out").exists()


def test_the_shipped_code_imports_no_moex_module():
    from test_layering import GRAPH

    assert GRAPH["moex.model.modeling_moex"] == {"moex.model.mlp_ops"}
    assert GRAPH["moex.model.mlp_ops"] == set()


def test_probing_an_export_equals_probing_the_run(text_runs, tmp_path):
    """k-sparse probing of a text MoE-X, once from its run (native reader, moex's GPT-2 BPE) and once from its
    export (Hugging Face reader, the exported tokenizer): the same tokens, labels, expert units and F1."""
    from conftest import CONLLU

    from moex.analysis.probing import run_probe

    pytest.importorskip("tiktoken")
    export = export_hf(text_runs / "moex", tmp_path / "hf")
    kw = dict(conllu=[str(CONLLU)], concepts=["NOUN"], ks=(1, 8),
              min_count=20, max_tokens=400)
    native = run_probe(text_runs / "moex", tmp_path / "native", **kw)
    through_hf = run_probe(export, tmp_path / "exported", **kw)
    assert through_hf["kinds"] == native["kinds"] == ["moe", "moe"]
    assert_same(native["concepts"]["NOUN"]["layers"], through_hf["concepts"]["NOUN"]["layers"])


def assert_same(a, b, where="layers"):
    """Equal structures, floats to 1e-6."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == pytest.approx(b, abs=1e-6), where
