"""The feature and expert browser: its statistics against brute force, the site's data, the pages in a real
headless Chromium, and bad input."""

import json
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import chess
import chess.svg
import numpy as np
import pytest
import torch

from moex import GPT, MoexError, make_config
from moex.browse.build import BrowseConfig, build_site, read_site_data
from moex.browse.chromium import dump_dom, find_chromium, page_url, screenshots, showcase_feature
from moex.browse.stats import BINS, feature_stats
from moex.data.chess.transcript import move_spans
from moex.interp.bsp import best_bsps_per_feature, firing_rate_given_label
from moex.interp.sites import site_for

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no chromium (apt-get install chromium)")


# statistics against brute force ----------------------------------------------------------------------------
def test_feature_stats_against_a_brute_force_loop():
    torch.manual_seed(0)
    model = GPT(make_config("tiny", "moex", vocab_size=32, ctx=64, n_layer=2)).eval()
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 32, size=rng.integers(20, 64)).tolist() for _ in range(12)]
    site = site_for(model, "mlp", 1)
    positions = [[0, 5, 7]] * len(rows)
    st = feature_stats(site, rows, window=16, top=3, per_decile=2, fmax_rows=5, positions=positions, progress=False,
                       vocab=32)
    with torch.no_grad():
        feats = [site.features(torch.tensor([r]))[0] for r in rows]
    every = torch.cat(feats)
    assert st.n_tokens == every.shape[0]
    assert torch.allclose(st.f_max, every.max(0).values, atol=1e-5)
    assert torch.allclose(st.f_max_first, torch.cat(feats[:5]).max(0).values, atol=1e-5)
    assert torch.equal(st.firing, (every > 0).sum(0))
    tokens = torch.tensor([t for r in rows for t in r])
    for c in range(32):  # firing per character id, and each id's occurrences
        assert st.occurrences[c] == (tokens == c).sum()
        assert torch.equal(st.firing_by_token[c], (every[tokens == c] > 0).sum(0).float())
    # histogram: a / f_max in BINS equal bins of (0, 1], counted token by token
    hist = np.zeros((site.width, BINS))
    for f in torch.nonzero(st.f_max > 0).flatten().tolist():
        for a in every[:, f].tolist():
            if a > 0:
                hist[f, min(BINS, int(np.ceil(a / st.f_max[f].item() * BINS))) - 1] += 1
    assert (np.abs(st.histogram.numpy() - hist) <= 1).all() and st.histogram.sum() == hist.sum()
    # windows: every 16 tokens of every row, scored by their max
    windows = {}
    for i, f in enumerate(feats):
        for w in range(0, len(f), 16):
            windows[i * 4 + w // 16] = f[w:w + 16]
    score = {wid: w.max(0).values for wid, w in windows.items()}
    best = torch.stack(list(score.values())).topk(3, dim=0).values
    assert torch.allclose(st.top.scores, best, atol=1e-5)
    for j in range(3):
        for f in range(0, site.width, 97):
            wid = int(st.top.ids[j, f])
            assert abs(score[wid][f] - st.top.scores[j, f]) < 1e-5  # ties may pick another window of equal score
            w = windows[wid][:, f]
            assert torch.allclose(st.top.acts[j, f, :len(w)], w * (w != 0), atol=1e-5)
    # decile samples: windows whose score falls in their decile of f_max
    for d, kept in enumerate(st.deciles):
        for j, f in zip(*np.nonzero(np.isfinite(kept.scores.numpy()))):
            r = score[int(kept.ids[j, f])][f] / st.f_max[f]
            assert d / 10 - 1e-6 < r <= (d + 1) / 10 + 1e-6
    assert np.allclose(st.at_positions, torch.stack([f[p] for f in feats for p in (0, 5, 7)]).numpy(), atol=1e-5)


def test_best_bsps_and_firing_rates_against_loops():
    rng = np.random.default_rng(1)
    feats = rng.exponential(size=(300, 5)) * (rng.random((300, 5)) < 0.5)
    labels = rng.random((300, 7)) < 0.4
    labels[:, 6] = rng.random(300) < 0.03  # a rare BSP: too few true positives to qualify
    train = np.arange(300) < 200
    fmax = feats[train].max(0)
    labels[:, 3] = feats[:, 2] > 0.5 * fmax[2]  # feature 2 classifies BSP 3 exactly at threshold 0.5
    feats[:, 4] = 1.0  # always on: F1 = the always-true classifier's, lift 0
    fmax[4] = 2.0
    res = best_bsps_per_feature(feats, labels, train, fmax, top=3, chunk=2, min_tp=10)
    for f in range(5):
        table = []
        for g in range(7):
            best = None
            for t in [i / 10 for i in range(11)]:
                on = feats[train, f] > t * fmax[f]
                tp = int((on & labels[train, g]).sum())
                if tp < 10:
                    continue
                p, r = tp / on.sum(), tp / labels[train, g].sum()
                f1 = 2 * p * r / (p + r)
                if best is None or f1 > best[0] + 1e-9:
                    best = (f1, p, r, t, tp, int(on.sum()))
            if best is not None:
                b = labels[train, g].mean()
                table.append((best[0] - 2 * b / (1 + b), best, g, b))
        table.sort(key=lambda x: -x[0])
        by_bsp = {g: (lift, best, b) for lift, best, g, b in table}
        k = min(3, len(table))
        assert np.allclose(res.lift[f, :k], [x[0] for x in table[:k]], atol=1e-4)  # the top lifts, in order
        for j in range(k):  # each listed BSP's numbers (ties in lift may list either BSP)
            lift, (f1, p, r, t, tp, n_on), b = by_bsp[int(res.bsp[f, j])]
            assert abs(res.lift[f, j] - lift) < 1e-4 and abs(res.f1[f, j] - f1) < 1e-4
            assert abs(res.precision[f, j] - p) < 1e-4 and abs(res.recall[f, j] - r) < 1e-4
            assert abs(res.threshold[f, j] - t) < 1e-6 and res.tp[f, j] == tp and res.positives[f, j] == n_on
            assert abs(res.base_rate[f, j] - b) < 1e-6
        assert all(np.isneginf(res.lift[f, len(table):]))
    assert res.bsp[2, 0] == 3 and res.f1[2, 0] > 0.999 and res.threshold[2, 0] <= 0.5
    assert np.all(np.abs(res.lift[4][np.isfinite(res.lift[4])]) < 1e-6)  # always on: no lift
    feats = feats[:60]
    labels = labels[:60]
    rate = firing_rate_given_label(feats, labels)
    for f in range(5):
        for g in range(7):
            assert abs(rate[f, g] - (feats[labels[:, g], f] > 0).mean()) < 1e-6


def test_move_spans_say_which_move_a_character_belongs_to():
    t = ";1.e4 e5 2.Nf3 Nc6"
    spans, final = move_spans(t)
    assert [(s.start, s.end, s.san, s.uci) for s in spans] == [(1, 5, "e4", "e2e4"), (6, 8, "e5", "e7e5"),
                                                              (9, 14, "Nf3", "g1f3"), (15, 18, "Nc6", "b8c6")]
    assert spans[2].fen_before == chess.Board("rnbqkbnr/pppp1ppp/8/4p3/4P3/8/PPPP1PPP/RNBQKBNR w KQkq - 0 2").fen()
    assert t[spans[2].start:spans[2].end] == "2.Nf3"
    assert chess.Board(final).fullmove_number == 3


# sites ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chess_run(chess_blocks_dir, tmp_path_factory):
    """A tiny MoE-X (2 layers, 8 x 512 = 4096 features) trained 10 steps on the session's games."""
    from moex import run_training

    out = tmp_path_factory.mktemp("browse") / "moex"
    run_training(out, "tiny", "moex", dict(data=str(chess_blocks_dir), n_layer=2, max_steps=10, batch_size=8,
                                           eval_interval=5, eval_batches=2, warmup_steps=2, lr=3e-3), progress=False)
    return out


@pytest.fixture(scope="module")
def chess_site(chess_run, chess_games_dir, tmp_path_factory):
    from moex import ChessEvalConfig, MatchConfig, evaluate_chess, read_games
    from moex.eval.chess_competence import write_chess_eval

    ev = tmp_path_factory.mktemp("chess_eval")
    res = evaluate_chess(GPT.from_pretrained(chess_run), read_games(chess_games_dir / "games.txt")[:20],
                         ChessEvalConfig(prefixes=40, play=True), MatchConfig(levels=[-2], games_per_level=1, max_plies=10),
                         device="cpu", progress=False)
    write_chess_eval(res, ev, str(chess_run))
    out = tmp_path_factory.mktemp("site") / "chess"
    cfg = BrowseConfig(n_games=40, top=4)
    rec = build_site(chess_run, out, games=chess_games_dir / "games.txt", layer=1, cfg=cfg, progress=False,
                     chess_eval=ev)
    return out, rec


def test_chess_site_data(chess_site, chess_run, chess_games_dir):
    from moex import read_games, score_chess

    out, rec = chess_site
    assert rec["width"] == 4096 and rec["moe"] and rec["kind"] == "chess"
    index = read_site_data(out / "data" / "index.js")
    assert index["features"]["id"] == list(range(4096)) and len(index["experts"]["id"]) == 8
    model = read_site_data(out / "data" / "model.js")
    # the model page's scores are score_chess' on the same games and layer
    ref = score_chess(GPT.from_pretrained(chess_run), read_games(chess_games_dir / "games.txt")[:40], layer=1)
    for k in ("coverage", "reconstruction", "coverage_per_bsp", "reconstruction_per_board"):
        assert model["chess"][k] == pytest.approx(ref[k], abs=1e-6)
    assert model["router"]["router"] == "sparsity" and model["loss"]["step"]
    ce = model["chess_eval"]  # moex eval chess's numbers, as it saved them
    saved = json.loads((Path(rec["chess_eval"]) / "chess_eval.json").read_text())
    assert ce["legal"]["greedy"]["rate"] == saved["legal_moves"]["greedy"]["legal_rate"]
    assert ce["probes"]["best_layer"] == saved["probes"]["best_layer"] and len(ce["match"]) == 6
    f = int(np.nanargmax([v if v is not None else np.nan for v in index["features"]["best_f1"]]))
    page = read_site_data(out / "data" / "features" / f"{f}.js")
    assert len(page["top"]) == 4 and len(page["bsps"]) == 5 and len(page["heatmap"]) == 12
    shares = [c["share"] for c in page["characters"]]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-3 and page["characters"][0]["rate"] > 0
    assert page["bsps"][0]["f1"] == index["features"]["best_f1"][f]
    games = read_games(chess_games_dir / "games.txt")
    for t in page["top"]:  # the board is the game's position before the move written at the peak character
        spans, _ = move_spans(games[t["game"] - 1])
        span = next(s for s in spans if s.end > t["peak"])
        assert (t["fen"], t["move"]) == (span.fen_before, span.uci)
        assert t["text"] == games[t["game"] - 1][:len(t["text"])]
        assert max(t["acts"]) == pytest.approx(t["score"], rel=5e-3)  # 3 and 4 significant digits
    assert sum(page["histogram"]) == pytest.approx(page["frequency"] * rec["tokens"], abs=1)
    # nothing is fetched from the network: the only URLs are SVG's XML namespaces
    for p in [*out.glob("*.html"), *out.glob("assets/*")]:
        assert set(re.findall(r"https?://[^\s\"'`)]+", p.read_text())) <= {"http://www.w3.org/2000/svg",
                                                                          "http://www.w3.org/1999/xlink"}, p


def uses(svg: str) -> list[tuple[str, float, float]]:
    """The pieces of a board SVG: (definition id, x, y)."""
    found = re.findall(r'<use href="#([a-z-]+)"[^>]*transform="translate\(([\d.]+), ([\d.]+)\)"', svg)
    return sorted((name, float(x), float(y)) for name, x, y in found)


@needs_chromium
def test_chess_pages_in_headless_chromium(chess_site, tmp_path):
    out, rec = chess_site
    index = read_site_data(out / "data" / "index.js")
    dom = dump_dom(page_url(out, "index.html"))
    assert "of 4096 features" in dom and dom.count('href="feature.html?id=') == 100  # the first page of 100
    f = int(np.argmax([v or 0 for v in index["features"]["best_f1"]]))
    # a view in the URL: sorted by best BSP F1, descending; filtered by a BSP name; page 2
    dom = dump_dom(page_url(out, "index.html?sort=best_f1&desc=1"))
    assert re.search(r'<tbody><tr><td class="id"><a href="feature.html\?id=(\d+)"', dom).group(1) == str(f)
    name = index["features"]["best_bsp"][f]
    dom = dump_dom(page_url(out, f"index.html?q={name.replace(' ', '%20')}"))
    assert f"{index['features']['best_bsp'].count(name)} of 4096 features" in dom
    dom = dump_dom(page_url(out, "index.html?page=2&min_frequency=0.01"))
    n = sum((v or 0) >= 0.01 for v in index["features"]["frequency"])
    assert f"{n} of 4096 features" in dom and "page 2 of" in dom and 'href="feature.html?id=0"' not in dom
    page = read_site_data(out / "data" / "features" / f"{f}.js")
    dom = dump_dom(page_url(out, f"feature.html?id={f}"))
    assert dom.count('<svg class="board"') == len(page["top"]) == 4
    assert dom.count('<svg class="heat"') == 12 and page["bsps"][0]["name"] in dom and "Characters it fires on" in dom
    assert dom.count('class="tok') >= sum(len(t["text"]) for t in page["top"])
    # each board has python-chess's pieces on python-chess's squares for its FEN
    boards = re.findall(r'<svg class="board".*?</svg>', dom, re.S)
    for t, svg in zip(page["top"], boards):
        ref = chess.svg.board(chess.Board(t["fen"]), coordinates=False, lastmove=chess.Move.from_uci(t["move"]))
        assert len(uses(ref)) == len(chess.Board(t["fen"]).piece_map()) and uses(svg) == uses(ref)
        squares = re.compile(r'<rect x="(\d+)" y="(\d+)" [^>]*class="(square [^"]+)"[^>]*fill="([^"]+)"')
        assert len(squares.findall(svg)) == 64 and sorted(squares.findall(svg)) == sorted(squares.findall(ref))
    assert page["expert"] == f // 512 and f'href="expert.html?id={f // 512}"' in dom  # its expert, linked
    assert "true positives" in dom and "above base rate" in dom
    for b in page["bsps"]:  # each listed BSP has the support the ranking asks for and beats the base rate
        assert b["tp"] >= 10 and b["lift"] > 0 and b["positives"] >= b["tp"]
    dom = dump_dom(page_url(out, "expert.html?id=3"))
    assert "Expert 3" in dom and "Tokens most often routed to it" in dom
    assert 'href="feature.html?id=1536"' in dom and 'href="feature.html?id=2047"' in dom  # its units 1536..2047
    dom = dump_dom(page_url(out, "model.html"))
    assert "Coverage and reconstruction" in dom and "Router analysis" in dom and "<polyline" in dom
    assert "Does it play chess?" in dom and "random characters" in dom and "Games against Stockfish" in dom
    assert showcase_feature(out) == f  # the screenshots' default feature: the best BSP F1
    pngs = screenshots(out, tmp_path / "shots")
    assert [p.name for p in pngs] == ["index.png", "feature.png", "expert.png", "model.png"]
    assert all(p.stat().st_size > 20_000 for p in pngs)


@needs_chromium
def test_the_site_opens_from_a_static_server(chess_site):
    out, _ = chess_site
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dom = dump_dom(f"http://127.0.0.1:{server.server_port}/feature.html?id=1")
    finally:
        server.shutdown()
    assert "Feature 1" in dom and "Activation histogram" in dom


@pytest.fixture(scope="module")
def text_site(text_runs, tmp_path_factory):
    from conftest import WIKI_VALID

    out = tmp_path_factory.mktemp("site") / "text"
    rec = build_site(text_runs / "moex", out, data=[str(WIKI_VALID)], layer=1,
                     cfg=BrowseConfig(max_tokens=6000, window=16, top=5), progress=False)
    return out, rec


def test_text_site_data(text_site):
    out, rec = text_site
    assert rec["kind"] == "text" and rec["moe"]
    index = read_site_data(out / "data" / "index.js")
    f = int(np.argmax(index["features"]["frequency"]))
    page = read_site_data(out / "data" / "features" / f"{f}.js")
    assert len(page["top"]) == 5 and all(len(w["tokens"]) == len(w["acts"]) == 16 for w in page["top"])
    scores = [w["score"] for w in page["top"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(page["f_max"], rel=1e-3)
    for d in page["deciles"]:
        for w in d["windows"]:
            assert (d["decile"] - 1) / 10 - 1e-3 <= w["score"] / page["f_max"] <= d["decile"] / 10 + 1e-3
    experts = read_site_data(out / "data" / "index.js")["experts"]
    assert sum(experts["share"]) == pytest.approx(2, abs=1e-3)  # every token goes to its top-2 experts
    expert = read_site_data(out / "data" / "experts" / f"{int(np.argmax(experts['share']))}.js")
    assert expert["top_tokens"] and 0 < expert["share"] <= 1 and 0 < expert["mean_l0"] <= expert["units"]
    assert sum(t["count"] for t in expert["top_tokens"]) <= expert["share"] * rec["tokens"] + 1


@needs_chromium
def test_text_pages_in_headless_chromium(text_site, tmp_path):
    out, _ = text_site
    index = read_site_data(out / "data" / "index.js")
    f = int(np.argmax(index["features"]["frequency"]))
    dom = dump_dom(page_url(out, f"feature.html?id={f}"))
    assert dom.count('class="window"') >= 5 and dom.count('<span class="tok') >= 5 * 16
    assert "Samples by activation decile" in dom and "rgba(255,110,0,1.000)" in dom  # the peak token is fully shaded
    shots = screenshots(out, tmp_path, feature=f)
    assert len(shots) == 4


def test_autointerp_results_show_and_must_come_from_the_same_model(text_runs, text_site, tmp_path):
    from conftest import WIKI_VALID

    from moex.autointerp.pipeline import AutointerpConfig, run_autointerp

    class Scripted:  # an LLM that explains and answers in a fixed way: the browser only shows what it said
        name = "scripted"

        def complete(self, messages):
            asked = re.search(r"Answer \((\d+) values\)", messages[-1]["content"])
            if asked:  # as many 0/1 answers as examples shown
                return "[" + ", ".join(str(1 - i % 2) for i in range(int(asked.group(1)))) + "]"
            return "[EXPLANATION]: the letter e"

    text = [str(WIKI_VALID)]
    index = read_site_data(text_site[0] / "data" / "index.js")
    f = int(np.argmin(np.abs(np.array(index["features"]["frequency"]) - 0.05)))  # fires on some windows, not all
    cfg = AutointerpConfig(window=16, n_explain=3, per_decile=1, n_deciles=2, n_negative=2, max_tokens=6000,
                           scorer="list")
    run_autointerp(GPT.from_pretrained(text_runs / "moex"), text, tmp_path / "ai", Scripted(), layer=1,
                   feature_ids=[f], cfg=cfg, progress=False)
    out = tmp_path / "site"
    build_site(text_runs / "moex", out, data=text, layer=1, autointerp=tmp_path / "ai",
               cfg=BrowseConfig(max_tokens=3000, window=16), progress=False)
    page = read_site_data(out / "data" / "features" / f"{f}.js")
    assert page["explanation"] == "the letter e" and page["detection"] is not None
    assert "judge check FAILED" in page["judge"]  # it alternates 1, 0 whatever it is shown: no information
    assert "judge check FAILED" in read_site_data(out / "data" / "index.js")["judge"]["features"]
    if find_chromium() is not None:
        dom = dump_dom(page_url(out, f"feature.html?id={f}"))
        assert "judge check FAILED" in dom and "the letter e" in dom
        assert "judge check FAILED" in dump_dom(page_url(out, "index.html"))
    assert read_site_data(out / "data" / "index.js")["features"]["explanation"][f] == "the letter e"
    with pytest.raises(MoexError, match=r"ai/summary.json: made from model .*not from .*gelu"):
        build_site(text_runs / "gelu", tmp_path / "other", data=text, layer=1, autointerp=tmp_path / "ai",
                   progress=False)
    with pytest.raises(MoexError, match="explains site mlp of layer 1; the site browsed is mlp of layer 0"):
        build_site(text_runs / "moex", tmp_path / "other", data=text, layer=0, autointerp=tmp_path / "ai",
                   progress=False)


def test_probe_and_expert_explanations_show_on_the_pages(text_runs, tmp_path):
    from conftest import CONLLU, WIKI_VALID

    from moex.analysis.expert_explanations import run_experts
    from moex.analysis.probing import run_probe

    class Scripted:  # an explanation, then "yes" for every scored window
        name = "scripted"

        def complete(self, messages):
            n = messages[-1]["content"].count("Example ")
            return str([1] * n) if "Answer (" in messages[-1]["content"] else "[EXPLANATION]: line starts"

    text = [str(WIKI_VALID)]
    run_experts(text_runs / "moex", text, [1], Scripted(), tmp_path / "experts", window=16, max_tokens=20_000)
    conllu = [str(CONLLU)]
    run_probe(text_runs / "moex", tmp_path / "probe", conllu=conllu, concepts=["NOUN"], layers=[1], ks=(1, 2),
              min_count=20, max_tokens=300)
    out = tmp_path / "site"
    build_site(text_runs / "moex", out, data=text, layer=1, experts=tmp_path / "experts", probe=tmp_path / "probe",
               cfg=BrowseConfig(max_tokens=3000, window=16), progress=False)
    model = read_site_data(out / "data" / "model.js")
    assert model["probe"]["concepts"]["NOUN"]["best"]["1"] is not None
    assert model["experts_explained"]["mean_f1"] > 0
    expert = read_site_data(out / "data" / "experts" / "0.js")
    assert expert["explanation"] == "line starts" and expert["recall"] == 1.0
    assert "judge check FAILED" in expert["judge"] and "FAILED" in model["experts_explained"]["judge"]
    explained = json.loads((tmp_path / "experts" / "experts.json").read_text())["layers"][0]
    assert expert["token_baseline"]["explanation"] == explained["experts"][0]["token_baseline"]["explanation"]
    assert model["experts_explained"]["mean_token_f1"] == pytest.approx(explained["mean_token_f1"])
    with pytest.raises(MoexError, match="explains experts of layers \\[1\\], not of the browsed layer 0"):
        build_site(text_runs / "moex", tmp_path / "x", data=text, layer=0, experts=tmp_path / "experts",
                   progress=False)
    with pytest.raises(MoexError, match="probe.json: made from model"):
        build_site(text_runs / "gelu", tmp_path / "x", data=text, layer=1, probe=tmp_path / "probe", progress=False)


def test_a_hugging_face_moe_through_its_reader(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from conftest import SHAKESPEARE

    torch.manual_seed(0)
    vocab = {c: i for i, c in enumerate(["<unk>", " "] + list("abcdefghijklmnopqrstuvwxyz"))}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<unk>")
    cfg = transformers.AutoConfig.for_model("olmoe", vocab_size=28, hidden_size=32, intermediate_size=16,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            num_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
                                            bos_token_id=0, eos_token_id=0, pad_token_id=0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "olmoe")
    fast.save_pretrained(tmp_path / "olmoe")
    text = tmp_path / "t.txt"
    text.write_text(SHAKESPEARE.read_text()[:4000].lower())
    rec = build_site(tmp_path / "olmoe", tmp_path / "site", data=[str(text)], layer=1,
                     cfg=BrowseConfig(window=16, top=3), progress=False)
    assert rec["moe"] and rec["width"] == 4 * 16
    expert = read_site_data(tmp_path / "site" / "data" / "experts" / "2.js")
    assert len(expert["top"]) == 3 and expert["top_tokens"]
    assert read_site_data(tmp_path / "site" / "data" / "model.js")["model"]["class"] == "OlmoeForCausalLM"


def test_bad_input_names_what_does_not_match(chess_run, chess_games_dir, tmp_path):
    games = chess_games_dir / "games.txt"
    text_model = tmp_path / "text-model"  # a GPT-2-vocabulary model (random weights: only its vocabulary matters)
    GPT(make_config("tiny-lm", "moex", n_layer=1)).save_pretrained(text_model)
    with pytest.raises(MoexError, match=r"layer 5 out of range: the model has layers 0\.\.1"):
        build_site(chess_run, tmp_path / "a", games=games, layer=5, progress=False)
    with pytest.raises(MoexError, match=r"games.txt: chess games need a chess model .* vocabulary of 50257"):
        build_site(text_model, tmp_path / "a", games=games, progress=False)
    with pytest.raises(MoexError, match=r"text needs a text model; .* is a chess model \(the 32-character vocab"):
        build_site(chess_run, tmp_path / "a", data=[str(games)], progress=False)
    bad = tmp_path / "bad.txt"
    bad.write_text(games.read_text().splitlines()[0] + "\n;1.e4 e5 2.Nf3 {!}\n")
    with pytest.raises(MoexError, match=r"bad.txt: game 2: character '\{' at column"):
        build_site(chess_run, tmp_path / "a", games=bad, progress=False)
    with pytest.raises(MoexError, match="one of the two"):
        build_site(chess_run, tmp_path / "a", progress=False)
    (tmp_path / "notasite").mkdir()
    (tmp_path / "notasite" / "keep.txt").write_text("mine")
    with pytest.raises(MoexError, match="exists and is not a moex site"):
        build_site(chess_run, tmp_path / "notasite", games=games, progress=False)
    assert (tmp_path / "notasite" / "keep.txt").read_text() == "mine"


def test_cli_parses_and_reports(chess_run, chess_games_dir, tmp_path, capsys):
    from moex.cli import main

    assert main(["browse", "--checkpoint", str(chess_run), "--games", str(chess_games_dir / "games.txt"),
                 "--out", str(tmp_path / "s"), "n_games=4", "top=2"]) == 0
    assert "4096 features of mlp layer 1 and its experts on 4 games" in capsys.readouterr().out
    assert main(["browse", "--checkpoint", str(chess_run), "--games", str(chess_games_dir / "games.txt"),
                 "--out", str(tmp_path / "s"), "layer=3"]) == 2
    assert "moex: error: browse settings: unknown browse key(s) 'layer'" in capsys.readouterr().err


@needs_chromium
def test_corpus_tokens_and_explanations_holding_markup_render_as_text(text_runs, tmp_path):
    """Text from a corpus, its tokens and an LLM's explanation are shown as text, never run as markup: a page
    built from HTML and script in all three neither executes them nor grows their elements."""
    from moex.autointerp.pipeline import AutointerpConfig, run_autointerp

    attack = "document.title='PWNED'"
    corpus = tmp_path / "markup.txt"
    corpus.write_text("".join(f"line {i} <script>{attack}</script> and <img src=x onerror=\"{attack}\"> ends\n"
                              for i in range(300)))

    class Scripted:
        name = "scripted"

        def complete(self, messages):
            asked = re.search(r"Answer \((\d+) values\)", messages[-1]["content"])
            if asked:
                return "[" + ", ".join("1" for _ in range(int(asked.group(1)))) + "]"
            return f"[EXPLANATION]: <b>bold</b><script>{attack}</script><img src=x onerror=\"{attack}\">"

    model = GPT.from_pretrained(text_runs / "moex")
    cfg = AutointerpConfig(window=16, n_explain=3, per_decile=1, n_deciles=2, n_negative=2, max_tokens=6000,
                           scorer="list")
    out = tmp_path / "site"
    build_site(text_runs / "moex", out, data=[str(corpus)], layer=1, cfg=BrowseConfig(max_tokens=3000, window=16),
               progress=False)
    index = read_site_data(out / "data" / "index.js")
    f = int(np.argmin(np.abs(np.array(index["features"]["frequency"]) - 0.1)))  # fires on some windows, not all
    run_autointerp(model, [str(corpus)], tmp_path / "ai", Scripted(), layer=1, feature_ids=[f], cfg=cfg,
                   progress=False)
    build_site(text_runs / "moex", out, data=[str(corpus)], layer=1, autointerp=tmp_path / "ai",
               cfg=BrowseConfig(max_tokens=3000, window=16), progress=False)
    assert "<script>" in read_site_data(out / "data" / "features" / f"{f}.js")["explanation"]  # kept as said
    for page in (f"feature.html?id={f}", "index.html?q=bold"):  # the index filtered to the explained feature
        dom = dump_dom(page_url(out, page))
        title = re.search(r"<title>(.*?)</title>", dom, re.S)
        assert "PWNED" not in (title.group(1) if title else "")  # no script of the data ran
        assert "<b>bold</b>" not in dom and '<img src="x"' not in dom and f"<script>{attack}" not in dom
        assert "&lt;b&gt;bold&lt;/b&gt;" in dom  # the explanation, shown as its text
    dom = dump_dom(page_url(out, f"feature.html?id={f}"))
    assert "&lt;" in dom and "onerror" in dom  # the corpus's markup, shown as its characters
