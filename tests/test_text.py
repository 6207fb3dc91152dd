"""Natural-language track: GPT-2 tokeniser, token shards, text training, perplexity, LAMBADA, GPT-2 weights."""

import json
import math

import numpy as np
import pytest
import regex
import torch
import torch.nn.functional as F
from conftest import SHAKESPEARE, WIKI_TEST

from moex import run_training
from moex.cli import main
from moex.data.loader import BlockData
from moex.data.text.build import build_text
from moex.data.text.tokenizer import EOT, GPT2_PATTERN, TokenizerError, decode, encode, load_ranks, ranks_path
from moex.eval.ppl import evaluate_checkpoints, format_table, lambada, sliding_window_nll, windows, write_results
from moex.model import GPT, load_model, make_config

SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\ttabs\nand newlines\n\n",
    "Unicode: naïve café, 東京, emoji 🎉, don't we'll they're",
    "numbers 1234567 and symbols <|endoftext|> {}[]()",
    " = Valkyria Chronicles III = \n",
]


def reference_bpe(text: str, ranks: dict[bytes, int]) -> list[int]:
    """GPT-2 BPE written out: split with GPT-2's pattern, then merge the lowest-ranked pair until none."""
    out = []
    for piece in regex.findall(GPT2_PATTERN, text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while len(parts) > 1:
            pairs = [(ranks.get(parts[i] + parts[i + 1], math.inf), i) for i in range(len(parts) - 1)]
            rank, i = min(pairs)
            if rank == math.inf:
                break
            parts[i: i + 2] = [parts[i] + parts[i + 1]]
        out += [ranks[p] for p in parts]
    return out


def test_tokenizer_matches_reference_bpe_and_round_trips():
    ranks = load_ranks(ranks_path())
    assert encode("Hello world") == [15496, 995]  # GPT-2's well-known ids
    for s in SAMPLES:
        assert encode(s) == reference_bpe(s, ranks), s
        assert decode(encode(s)) == s


def test_missing_ranks_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MOEX_GPT2_RANKS", str(tmp_path / "nope.tiktoken"))
    with pytest.raises(TokenizerError, match="no such file"):
        ranks_path()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_build_sources_shards_and_blocks(tmp_path):
    docs = [f"Document number {i}. " + "Some words follow here. " * (i % 5 + 1) for i in range(60)]
    write_jsonl(tmp_path / "a.jsonl", [{"text": d, "id": i} for i, d in enumerate(docs[:30])])
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": docs[30:50]}), tmp_path / "b.parquet")
    (tmp_path / "txt").mkdir()
    for i, d in enumerate(docs[50:]):
        (tmp_path / "txt" / f"{i:02d}.txt").write_text(d)
    out = tmp_path / "tok"
    meta = build_text([str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet"), str(tmp_path / "txt")], out,
                      val_fraction=0.1, block=17, shard_tokens=100, workers=2, progress=False)
    assert meta["n_docs"] == 60 and len(meta["files"]["train"]) > 3
    train_docs = [d for i, d in enumerate(docs) if i % 10 != 9]
    expected = np.array([t for d in train_docs for t in [EOT, *encode(d)]], dtype=np.uint16)
    stream = np.concatenate([np.fromfile(out / f, dtype=np.uint16) for f in meta["files"]["train"]])
    assert np.array_equal(stream, expected)
    assert meta["n_tokens"]["train"] == expected.size
    # BlockData cuts each shard into consecutive blocks and reads across shards
    data = BlockData(out)
    blocks = [np.fromfile(out / f, dtype=np.uint16) for f in meta["files"]["train"]]
    blocks = np.concatenate([b[: b.size - b.size % 17].reshape(-1, 17) for b in blocks])
    assert data.n_blocks("train") == len(blocks)
    x, y = data.blocks("train", np.array([0, 5, len(blocks) - 1]))
    assert torch.equal(x, torch.from_numpy(blocks[[0, 5, -1], :-1].astype(np.int64)))
    assert torch.equal(y, torch.from_numpy(blocks[[0, 5, -1], 1:].astype(np.int64)))


@pytest.mark.parametrize("case,match", [
    ("binary", r"bin\.txt: looks binary"),
    ("empty", r"empty\.txt: the file is empty"),
    ("column", r"rows\.jsonl:2: no 'text' field \(found: body\)"),
    ("json", r"bad\.jsonl:1: not valid JSON"),
    ("parquet", r"t\.parquet: no 'text' column \(found: body\)"),
])
def test_bad_input_errors_clearly(case, match, tmp_path, capsys):
    if case == "binary":
        src = tmp_path / "bin.txt"
        src.write_bytes(b"\x00\x01\x02" * 100)
    elif case == "empty":
        src = tmp_path / "empty.txt"
        src.write_text("  \n")
    elif case == "column":
        src = tmp_path / "rows.jsonl"
        src.write_text('{"text": "fine"}\n{"body": "no text here"}\n')
    elif case == "json":
        src = tmp_path / "bad.jsonl"
        src.write_text('{"text": "unterminated\n')
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        import pyarrow as pa

        src = tmp_path / "t.parquet"
        pq.write_table(pa.table({"body": ["x"]}), src)
    assert main(["data", "text", "build", str(src), "--out", str(tmp_path / "out"), "--workers", "1"]) == 2
    assert regex.search(match, capsys.readouterr().err)


def tiny_lm(seed=0, **over):
    torch.manual_seed(seed)
    shape = dict(n_layer=1, d_model=32, n_head=2, d_mlp=64, ctx=16) | over
    return GPT(make_config("tiny-lm", "gelu", **shape)).eval()


def test_sliding_window_equals_brute_force_and_direct():
    model = tiny_lm()
    tokens = encode("It was the best of times, it was the worst of times, it was the age of wisdom, "
                    "it was the age of foolishness, it was the epoch of belief.")
    seq = [EOT, *tokens]
    n, ctx = len(tokens), 16
    for stride in (4, 7, 16):
        got = sliding_window_nll(model, tokens, stride=stride, ctx=ctx, batch_size=3)
        # brute force: each position p is scored by the one window whose new targets include it,
        # from that window's inputs up to p
        total, seen = 0.0, 0
        for begin, end, first in windows(n, ctx, stride):
            for p in range(first, end + 1):
                with torch.no_grad():
                    logits = model(torch.tensor([seq[begin:p]])).logits[0, -1]
                total -= F.log_softmax(logits, -1)[seq[p]].item()
                seen += 1
        assert seen == n
        assert got.n_tokens == n
        assert got.nll == pytest.approx(total, rel=1e-5)
    short = tokens[:12]  # fits one window: equals the model's own mean loss
    x = torch.tensor([[EOT, *short[:-1]]])
    with torch.no_grad():
        direct = model(x, torch.tensor([short])).loss.item()
    assert sliding_window_nll(model, short, ctx=ctx).ppl == pytest.approx(math.exp(direct), rel=1e-5)


def test_lambada_accuracy_and_perplexity_brute_force():
    model = tiny_lm(seed=3)
    passages = ["the cat sat on the mat", "one two three four", "a b c d e f"]
    got = lambada(model, passages)
    correct, total = 0, 0.0
    for text in passages:
        context, word = text.rsplit(" ", 1)
        ctx_tok, tgt = encode(context), encode(" " + word)
        ok = True
        for j, t in enumerate(tgt):
            with torch.no_grad():
                logits = model(torch.tensor([[EOT, *ctx_tok, *tgt[:j]]])).logits[0, -1]
            total -= F.log_softmax(logits, -1)[t].item()
            ok &= logits.argmax().item() == t
        correct += ok
    assert got.accuracy == correct / 3
    assert got.ppl == pytest.approx(math.exp(total / 3), rel=1e-5)


@pytest.fixture(scope="module")
def shakespeare_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    build_text([str(SHAKESPEARE)], root / "data", block=65, val_fraction=0.05, workers=1,
               progress=False)
    run_training(root / "run", "tiny-lm", settings=dict(
        data=str(root / "data"), n_layer=2, ctx=64, max_steps=60, batch_size=8, eval_interval=30, eval_batches=4,
        log_interval=10, warmup_steps=5, lr=3e-3), progress=False)
    return root


def test_text_training_loss_falls_and_ppl_on_wikitext(shakespeare_run, tmp_path, capsys):
    rows = [json.loads(line) for line in open(shakespeare_run / "run" / "metrics.jsonl")]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    print("val losses", val)
    assert val[-1] < val[0] and val[-1] < math.log(50257) - 3
    head = tmp_path / "wikitext-2-test-head.txt"
    head.write_text(WIKI_TEST.read_text()[:4000])
    held_out = tmp_path / "shakespeare-tail.txt"  # the end of the stream: in the validation split
    held_out.write_text(SHAKESPEARE.read_text()[-4000:])
    out = tmp_path / "ppl.json"
    rows = evaluate_checkpoints([shakespeare_run / "run"], [str(head), str(held_out)], stride=32, device="cpu")
    write_results(rows, out)
    wiki, shakes = json.loads(out.read_text())["results"]
    print(format_table(rows))
    assert "| checkpoint |" in out.with_suffix(".md").read_text()
    assert wiki["n_tokens"] == len(encode(head.read_text())) and math.isfinite(wiki["ppl"])
    # in-domain text: the perplexity agrees with the training run's validation loss
    assert 0.7 < shakes["ppl"] / math.exp(val[-1]) < 1.3
    untrained = sliding_window_nll(tiny_lm(n_layer=2, d_model=128, n_head=4, d_mlp=1024, ctx=64),
                                   encode(held_out.read_text()), stride=32)
    assert shakes["ppl"] < untrained.ppl / 20


@pytest.mark.slow
def test_ppl_on_the_wikitext2_test_excerpt(shakespeare_run):
    model = load_model(shakespeare_run / "run")
    text = WIKI_TEST.read_text()
    r = sliding_window_nll(model, encode(text), stride=64)
    print(f"wikitext-2 test: {r.n_tokens} tokens, ppl {r.ppl:.1f}")
    assert r.ppl < 50257


def test_hf_gpt2_weights_give_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=48, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path).eval()
    assert ours.cfg.gelu_approx == "tanh" and ours.cfg.bias
    x = torch.randint(0, 300, (2, 32))
    with torch.no_grad():
        assert torch.allclose(ours(x).logits, hf(x).logits, atol=1e-5)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A 512-entry BPE learned on Shakespeare, data built with it, and a 2-layer model trained 40 steps."""
    from moex.data.text.build import build_tokenizer

    root = tmp_path_factory.mktemp("bpe")
    source = [str(SHAKESPEARE)]
    build_tokenizer(source, root / "bpe", 512)
    build_text(source, root / "data", block=65, val_fraction=0.05, workers=2, tokenizer=root / "bpe",
               progress=False)
    run_training(root / "run", "tiny-lm", settings=dict(
        data=str(root / "data"), vocab_size=512, n_layer=2, ctx=64, max_steps=40, batch_size=8, eval_interval=40,
        eval_batches=4, log_interval=10, warmup_steps=5, lr=3e-3), progress=False)
    return root


def test_trained_bpe_round_trips_and_offsets_point_at_each_token(bpe_run):
    from moex.data.text.tokenizer import load_tokenizer

    tok = load_tokenizer(bpe_run / "bpe")
    assert (tok.name, tok.vocab_size) == ("bpe", 512) and tok.decode([tok.eot]) == "<|endoftext|>"
    for text in SAMPLES:
        ids, starts = tok.offsets(text)
        assert tok.decode(ids) == text and ids == tok.encode(text) and tok.eot not in ids
        if text.isascii():  # one character per byte: each token's text begins at its start
            for i, (t, s) in enumerate(zip(ids, starts)):
                assert text[s:].startswith(tok.decode([t])), (text, i)
    assert load_tokenizer(bpe_run / "nowhere").name == "gpt2"


def test_data_and_runs_carry_the_trained_tokenizer(bpe_run, tmp_path):
    """Shards hold the BPE's ids (each document led by its <|endoftext|>), the run copies tokenizer.json,
    perplexity and probing read text with it: the perplexity equals a direct sliding window over its ids."""
    from moex.analysis.probing import load_reader
    from moex.data.text.tokenizer import load_tokenizer

    meta = json.loads((bpe_run / "data" / "meta.json").read_text())
    assert (meta["tokenizer"], meta["vocab_size"]) == ("bpe", 512)
    tok = load_tokenizer(bpe_run / "run")
    stream = np.fromfile(bpe_run / "data" / meta["files"]["train"][0], dtype=np.uint16)
    text = SHAKESPEARE.read_text()
    assert stream[0] == tok.eot and list(stream[1:200]) == tok.encode(text)[:199]
    held_out = tmp_path / "tail.txt"
    held_out.write_text(text[-3000:])
    row, = evaluate_checkpoints([bpe_run / "run"], [str(held_out)], stride=32, device="cpu")
    model = GPT.from_pretrained(bpe_run / "run")
    direct = sliding_window_nll(model, tok.encode(held_out.read_text()), stride=32, eot=tok.eot)
    assert row["n_tokens"] == direct.n_tokens and row["ppl"] == pytest.approx(direct.ppl, rel=1e-6)
    assert row["ppl"] < 512 / 2.5  # well below the uniform guess's 512: it learned something in 40 steps
    _, tokenize = load_reader(bpe_run / "run")
    assert tokenize("to be or not") == tok.offsets("to be or not")
    from moex.autointerp.pipeline import text_codec
    from moex.training.checkpoint import latest_checkpoint

    for where in (bpe_run / "run", latest_checkpoint(bpe_run / "run")):  # a run and one of its checkpoints
        encode_, decode_one, bos = text_codec(GPT.from_pretrained(where))
        assert encode_("to be or not") == tok.encode("to be or not") and bos == tok.eot


def test_bad_tokenizer_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "text", "build", str(SHAKESPEARE), "--out", str(tmp_path / "d"),
                 "--tokenizer", str(tmp_path / "empty")]) == 2
    assert "empty: no tokenizer.json there" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    assert main(["data", "text", "build", str(SHAKESPEARE), "--out", str(tmp_path / "d"),
                 "--tokenizer", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "bad/tokenizer.json: not a tokenizers file" in err and err.count("\n") == 1
    assert main(["data", "text", "tokenizer", str(SHAKESPEARE), "--out", str(tmp_path / "t"),
                 "--vocab-size", "100"]) == 2
    assert "vocab_size=100 must be in 257..65535" in capsys.readouterr().err
    assert not (tmp_path / "d" / "meta.json").exists() and not (tmp_path / "t" / "tokenizer.json").exists()
