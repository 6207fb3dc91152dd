"""``moex browse``: a static site of one layer's features (and, for an MoE layer, its experts).

The site opens from the file system or any static server, with no network: the pages (``index.html``,
``feature.html?id=N``, ``expert.html?id=E``, ``model.html``) and ``assets/`` come from the package; the data is
JavaScript files (``data/index.js``, ``data/model.js``, ``data/features/N.js``, ``data/experts/E.js``), one
per page and loaded only by the page that shows it (``fetch`` of ``file://`` URLs is blocked in browsers;
script tags are not). Chess boards are drawn in the page from python-chess's own SVG pieces, squares and
geometry (``assets/pieces.js`` is written from ``chess.svg``): one FEN per board keeps a 4096-feature site
small, where python-chess's complete SVG would be 17 kB per board.

On chess games (``games``), a feature page shows its top positions (one per game: the board before the move
being written at the peak character, that move and the transcript shaded by activation), the BSPs it
classifies best (F1 at its own best threshold on the train games, as ``interp.bsp``), its firing rate
given each piece on each square (at the evaluation positions) and its activation histogram. On text
(``data``), the top windows and random windows of each activation decile, tokens shaded by activation.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ..progress import progress_bar

from ..artifacts import read_output, write_json
from ..autointerp.judge_check import judge_line
from ..config import Config, ConfigError
from ..errors import MoexError
from ..interp.sites import model_fingerprint, site_for
from .stats import BINS, ExpertStats, FeatureStats, expert_stats, feature_stats

PAGES = ("index.html", "feature.html", "expert.html", "model.html")
ASSETS = ("site.css", "site.js")
SITE_JSON = "site.json"


@dataclass
class BrowseConfig(Config):
    label: ClassVar[str] = "browse"

    top: int = 8  # top windows (chess: games) per feature and per expert
    per_decile: int = 3  # text: random windows per activation decile
    window: int = 32  # text: tokens per window
    max_tokens: int = 100_000  # text: corpus tokens read
    n_games: int = 200  # chess: games read (the first train_fraction label the BSPs)
    max_chars: int = 256  # chess: characters of each game
    train_fraction: float = 0.5
    bsps: int = 5  # best BSPs listed per feature
    router_tokens: int = 4096  # tokens of the router analysis
    seed: int = 0

    def validate(self) -> None:
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"browse: train_fraction={self.train_fraction} must be in (0, 1)")
        if min(self.top, self.window, self.max_tokens, self.n_games, self.max_chars) < 1:
            raise ConfigError("browse: top, window, max_tokens, n_games and max_chars must be at least 1")


def _js(path: Path, name: str, obj: Any) -> None:
    """Write ``MOEX.<name>(obj)`` (a script the page loads) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".js.tmp")
    tmp.write_text(f"MOEX.{name}({json.dumps(obj, separators=(',', ':'), allow_nan=False)});\n")
    os.replace(tmp, path)


def read_site_data(path: str | Path) -> Any:
    """The object a site's data script (``data/....js``) passes to the page."""
    text = Path(path).read_text()
    return json.loads(text[text.index("(") + 1:text.rindex(")")])


def _r(x: float | None, digits: int = 4) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else float(f"{x:.{digits}g}")


def _acts(a: np.ndarray) -> list[float]:
    """Activations to 4 significant digits of the window's largest (as ``_r`` rounds f_max, so a window
    whose peak is f_max shades its peak fully); 0 as "0" (most of a sparse code)."""
    top = float(np.abs(a).max()) if a.size else 0.0
    digits = 4 if top == 0 else max(0, 3 - int(np.floor(np.log10(top))))
    return [round(v, digits) if v else 0 for v in a.tolist()]


def _rates(a: np.ndarray) -> list:
    """Rates to 3 decimals, NaN -> None (JSON has no NaN)."""
    return [[None if v != v else round(v, 3) for v in row] for row in a.tolist()]


# side results ---------------------------------------------------------------------------------------------
def read_result(kind: str, path: str | Path, filename: str, fingerprint: str,
                checkpoint: str) -> tuple[Path, dict[str, Any]]:
    """``path/filename`` of a ``moex KIND`` output, checked to come from the browsed model (its fingerprint)."""
    p, rec = read_output(path, filename, kind)
    theirs = rec.get("fingerprint")
    if theirs is None:
        raise MoexError(f"{p}: no model fingerprint (made by an older moex); rerun moex {kind} to browse it")
    if theirs != fingerprint:
        raise MoexError(f"{p}: made from model {rec.get('model', '?')} (fingerprint {theirs}), not from "
                        f"{checkpoint} (fingerprint {fingerprint})")
    return p, rec


def read_autointerp(path: str | Path, fingerprint: str, checkpoint: str, site: Any) -> dict[str, Any]:
    p, s = read_result("autointerp", path, "summary.json", fingerprint, checkpoint)
    if (s.get("site"), s.get("layer")) != (site.name, site.layer):
        raise MoexError(f"{p}: explains site {s.get('site')} of layer {s.get('layer')}; the site browsed is "
                        f"{site.name} of layer {site.layer}")
    return s


def read_experts(path: str | Path, fingerprint: str, checkpoint: str, layer: int) -> dict[str, Any] | None:
    p, r = read_result("experts", path, "experts.json", fingerprint, checkpoint)
    layers = {lay["layer"]: lay for lay in r["layers"]}
    if layer not in layers:
        raise MoexError(f"{p}: explains experts of layers {sorted(layers)}, not of the browsed layer {layer}")
    return {**layers[layer], "llm": r.get("llm"), "judge": r.get("judge")}


def read_probe(path: str | Path, fingerprint: str, checkpoint: str, layer: int) -> dict[str, Any]:
    p, r = read_result("probe", path, "probe.json", fingerprint, checkpoint)
    out = {}
    for name, c in r["concepts"].items():
        for lay in c["layers"]:
            if lay["layer"] == layer:
                out[name] = {"positives": c["positives"], "negatives": c["negatives"], "best": lay["best"],
                             "mean_over_experts": lay["mean_over_experts"]}
    if not out:
        raise MoexError(f"{p}: probes layers {r['layers']}, not the browsed layer {layer}")
    return {"ks": r["ks"], "concepts": out}


def read_chess_eval(path: str | Path, fingerprint: str, checkpoint: str) -> dict[str, Any]:
    """The model page's part of a ``moex eval chess`` output: legal-move rates, probes per layer, games."""
    _, r = read_result("eval chess", path, "chess_eval.json", fingerprint, checkpoint)
    lm = r["legal_moves"]
    out: dict[str, Any] = {"n_prefixes": lm["n_prefixes"], "temperature": lm["temperature"],
                           "legal": {k: {"rate": lm[k]["legal_rate"], "game_move_rate": lm[k]["game_move_rate"],
                                         "by_phase": {ph: v["legal_rate"] for ph, v in lm[k]["by_phase"].items()}}
                                     for k in ("greedy", "sampled", "chance")}}
    if "probes" in r:
        p = r["probes"]
        out["probes"] = {"layers": {k: v["state_accuracy"] for k, v in p["layers"].items()},
                         "baseline": p["baseline"]["state_accuracy"], "move_baseline": p["move_baseline"]["state_accuracy"],
                         "best_layer": p["best_layer"]}
    if "match" in r:
        out["match"] = [{k: row[k] for k in ("player", "level", "games", "wins", "draws", "losses", "forfeits",
                                             "illegal_rate")} | ({"elo": row["elo"]} if "elo" in row else {})
                        for row in r["match"]["summary"]]
    return out


# the corpus -------------------------------------------------------------------------------------------------
@dataclass
class Corpus:
    kind: str  # "chess" | "text"
    rows: list[list[int]]
    window: int
    token_text: Any  # token id -> its text
    games: list[str] | None = None
    positions: list[list[int]] | None = None  # chess: evaluation positions per game
    n_train: int | None = None  # chess: games that label features
    vocab: int = 0


def chess_corpus(model: Any, games_path: str | Path, checkpoint: str, cfg: BrowseConfig) -> Corpus:
    from ..data.chess.importer import read_games
    from ..data.chess.labels import eval_positions
    from ..data.chess.vocab import CHARS, encode
    from ..model.gpt import GPT

    vocab = getattr(getattr(model, "cfg", None), "vocab_size", None)
    if not isinstance(model, GPT) or vocab != len(CHARS):
        raise MoexError(f"{games_path}: chess games need a chess model (the {len(CHARS)}-character vocabulary); "
                        f"{checkpoint} has a vocabulary of {vocab if vocab else 'its own tokenizer'} (browse it "
                        "with --data TEXT)")
    games = read_games(games_path)[: cfg.n_games]
    if len(games) < 2:
        raise MoexError(f"{games_path}: browsing needs at least 2 games, found {len(games)}")
    n = min(cfg.max_chars, model.cfg.ctx)
    rows = [encode(g[:n], where=f"{games_path}: game {i + 1}").tolist() for i, g in enumerate(games)]
    return Corpus("chess", rows, n, lambda t: CHARS[t], games, [eval_positions(g, n) for g in games],
                  int(round(len(games) * cfg.train_fraction)), len(CHARS))


def text_corpus(model: Any, data: list[str], checkpoint: str, cfg: BrowseConfig) -> Corpus:
    from ..autointerp.pipeline import text_rows
    from ..data.chess.vocab import CHARS

    vocab = getattr(getattr(model, "cfg", None), "vocab_size", None)
    if vocab == len(CHARS):  # the chess vocabulary: a text tokenizer has more than 256 entries
        raise MoexError(f"{', '.join(map(str, data))}: text needs a text model; {checkpoint} is a chess model (the "
                        f"{len(CHARS)}-character vocabulary): browse it with --games GAMES.txt")
    rows, decode_one = text_rows(model, data, cfg.max_tokens, cfg.window)
    vocab = vocab or model.model.config.vocab_size
    return Corpus("text", [list(map(int, r)) for r in rows], cfg.window, decode_one, vocab=vocab)


# pages ---------------------------------------------------------------------------------------------------
def window_record(corpus: Corpus, wid: int, score: float, acts: np.ndarray, nw: int) -> dict[str, Any]:
    row, start = divmod(int(wid), nw)
    start *= corpus.window
    toks = corpus.rows[row][start:start + corpus.window]
    return {"score": _r(score), "row": row, "start": start, "tokens": [corpus.token_text(t) for t in toks],
            "acts": _acts(acts[:len(toks)])}


class Boards:
    """The board before the move being written at a character of a game (python-chess replay, once per game)."""

    def __init__(self, games: list[str]):
        self.games, self.spans = games, {}

    def at(self, game: int, char: int) -> dict[str, Any]:
        from ..data.chess.transcript import move_spans

        if game not in self.spans:
            self.spans[game] = move_spans(self.games[game], where=f"game {game + 1}")
        spans, final = self.spans[game]
        for s in spans:
            if s.end > char:
                return {"fen": s.fen_before, "move": s.uci, "san": s.san,
                        "label": f"{s.ply // 2 + 1}{'.' if s.ply % 2 == 0 else '...'}{s.san}"}
        return {"fen": final, "move": None, "san": None, "label": "end of the transcript"}


def chess_top(corpus: Corpus, boards: Boards, rec: dict[str, Any]) -> dict[str, Any]:
    """A top window of a chess feature: the game, its peak character, the board there; the transcript kept to
    24 characters past the peak."""
    peak = int(np.argmax(rec["acts"]))
    end = min(len(rec["tokens"]), peak + 24)
    return {"score": rec["score"], "game": rec["row"] + 1, "peak": peak, "text": "".join(rec["tokens"][:end]),
            "acts": rec["acts"][:end], **boards.at(rec["row"], peak)}


def characters(corpus: Corpus, st: FeatureStats, f: int, n: int = 8) -> list[dict[str, Any]]:
    """The characters feature ``f`` fires on most: P(fires | the character), and its share of the firing."""
    fire = st.firing_by_token[:, f]
    total = float(fire.sum())
    order = fire.argsort(descending=True)[:n].tolist()
    return [{"char": corpus.token_text(c), "rate": _r(float(fire[c]) / max(1.0, float(st.occurrences[c]))),
             "share": _r(float(fire[c]) / total)} for c in order if fire[c] > 0]


def bsp_name(index: int) -> str:
    import chess

    from ..data.chess.labels import PLANE_NAMES

    plane, square = divmod(int(index), 64)
    return f"{PLANE_NAMES[plane]} {chess.square_name(square)}"


def chess_extras(corpus: Corpus, st: FeatureStats, cfg: BrowseConfig, device: str) -> dict[str, Any]:
    """Model-level scores (as ``score_chess``), per-feature best BSPs and firing heatmaps."""
    from ..data.chess.labels import board_labels
    from ..interp.bsp import best_bsps_per_feature, firing_rate_given_label
    from ..interp.chess_eval import score_features, train_mask_for

    labels = board_labels(corpus.games, corpus.window)
    scores = score_features(corpus.games, st.at_positions, st.f_max_first.numpy(), cfg.train_fraction, device=device,
                            max_chars=corpus.window, labels=labels)
    train = train_mask_for(labels.game, len(corpus.games), cfg.train_fraction)
    best = best_bsps_per_feature(st.at_positions, labels.bsp(), train, st.f_max_first.numpy(), top=cfg.bsps,
                                 device=device)
    heat = firing_rate_given_label(st.at_positions, labels.bsp())
    return {"scores": scores, "best": best, "heatmap": heat}


def feature_pages(corpus: Corpus, st: FeatureStats, extras: dict[str, Any] | None,
                  autointerp: dict[str, Any] | None, out: Path, progress: bool = False,
                  units_per_expert: int = 0) -> dict[str, list]:
    """Write data/features/N.js for every feature; return the index columns. ``units_per_expert``: the
    features are an MoE's code (expert j's units are features j*D .. j*D + D - 1): each page links its expert."""
    nw = -(-max(len(r) for r in corpus.rows) // corpus.window)
    boards = Boards(corpus.games) if corpus.kind == "chess" else None
    explained = {p["feature"]: p for p in (autointerp or {}).get("per_feature", [])}
    judge = judge_line((autointerp or {}).get("judge")) if (autointerp or {}).get("llm") else None
    index: dict[str, list] = {k: [] for k in ("id", "frequency", "f_max", "explanation", "detection", "fuzzing")}
    if extras:
        index.update(best_f1=[], best_bsp=[])
    top_scores, top_ids, top_acts = st.top.scores.numpy(), st.top.ids.numpy(), st.top.acts.numpy()
    freq, fmax, hist = st.frequency.numpy(), st.f_max.numpy(), st.histogram.numpy().astype(int)
    for f in progress_bar(range(st.width), desc="feature pages", disable=not progress):
        tops = [window_record(corpus, top_ids[j, f], top_scores[j, f], top_acts[j, f], nw)
                for j in range(top_scores.shape[0]) if top_scores[j, f] > 0]
        page: dict[str, Any] = {"id": f, "of": st.width, "kind": corpus.kind, "f_max": _r(fmax[f]),
                                "frequency": _r(freq[f]), "histogram": hist[f].tolist(), "bins": BINS,
                                "explanation": None, "expert": f // units_per_expert if units_per_expert else None}
        if corpus.kind == "chess":
            page["top"] = [chess_top(corpus, boards, r) for r in tops]
            b = extras["best"]
            page["bsps"] = [{"name": bsp_name(b.bsp[f, j]), "index": int(b.bsp[f, j]), "f1": _r(b.f1[f, j]),
                             "precision": _r(b.precision[f, j]), "recall": _r(b.recall[f, j]),
                             "threshold": float(b.threshold[f, j]), "tp": int(b.tp[f, j]),
                             "positives": int(b.positives[f, j]), "base_rate": _r(b.base_rate[f, j]),
                             "lift": _r(b.lift[f, j])} for j in range(b.bsp.shape[1]) if b.lift[f, j] > 0]
            page["fires_at_positions"] = int(st.at_positions.fires[f])
            page["n_positions"] = int(st.at_positions.shape[0])
            page["heatmap"] = _rates(extras["heatmap"][f].reshape(12, 64))
            page["characters"] = characters(corpus, st, f)
        else:
            page["top"] = tops
            page["deciles"] = [{"decile": d + 1, "windows": [
                window_record(corpus, kept.ids[j, f], kept.acts[j, f].max(), kept.acts[j, f].numpy(), nw)
                for j in range(kept.scores.shape[0]) if kept.scores[j, f] > -np.inf]}
                for d, kept in enumerate(st.deciles)]
        if f in explained:
            e = explained[f]
            page.update(explanation=e["explanation"], detection=_r(e["detection_accuracy"]),
                        fuzzing=_r(e["fuzzing_accuracy"]), judge=judge)
        _js(out / "data" / "features" / f"{f}.js", "page", page)
        index["id"].append(f)
        index["frequency"].append(page["frequency"])
        index["f_max"].append(page["f_max"])
        index["explanation"].append(page["explanation"])
        index["detection"].append(page.get("detection"))
        index["fuzzing"].append(page.get("fuzzing"))
        if extras:
            index["best_f1"].append(page["bsps"][0]["f1"] if page["bsps"] else 0.0)
            index["best_bsp"].append(page["bsps"][0]["name"] if page["bsps"] else None)
    return index


def expert_pages(corpus: Corpus, es: ExpertStats, explained: dict[str, Any] | None, out: Path,
                 units_are_features: bool = False) -> dict[str, list]:
    """Write data/experts/N.js for every expert (linking its units when the browsed features are the MoE's
    code); return the index columns."""
    nw = -(-max(len(r) for r in corpus.rows) // corpus.window)
    by_expert = {x["expert"]: x for x in (explained or {}).get("experts", [])}
    index: dict[str, list] = {k: [] for k in ("id", "share", "mean_l0", "top_tokens", "f1", "explanation")}
    share, l0 = es.share.numpy(), es.mean_l0.numpy()
    for e in range(es.n_experts):
        counts = es.token_counts[e]
        order = counts.argsort(descending=True)[:15]
        tokens = [{"token": corpus.token_text(int(t)), "count": int(counts[t]),
                   "share_of_token": _r(counts[t] / max(1.0, float(es.occurrences[t])))}
                  for t in order.tolist() if counts[t] > 0]
        tops = [window_record(corpus, es.top.ids[j, e], es.top.scores[j, e], es.top.acts[j, e].numpy(), nw)
                for j in range(es.top.scores.shape[0]) if es.top.scores[j, e] > 0]
        x = by_expert.get(e, {})
        page = {"id": e, "of": es.n_experts, "kind": corpus.kind, "share": _r(share[e]), "mean_l0": _r(l0[e]),
                "units": es.units_per_expert, "units_are_features": units_are_features, "top_tokens": tokens, "top": tops,
                "explanation": x.get("explanation"), "f1": _r(x["f1"]) if x else None,
                "judge": judge_line((explained or {}).get("judge")) if (explained or {}).get("llm") else None,
                "precision": _r(x["precision"]) if x else None, "recall": _r(x["recall"]) if x else None,
                "token_baseline": {"explanation": t["explanation"], "f1": _r(t["f1"]), "random_f1": _r(t["random_f1"]),
                                   "routing_f1": _r(t["routing"]["f1"])} if (t := x.get("token_baseline")) else None}
        _js(out / "data" / "experts" / f"{e}.js", "page", page)
        for k in ("id", "share", "mean_l0", "explanation", "f1"):
            index[k].append(page[k])
        index["top_tokens"].append(" ".join(repr(t["token"])[1:-1] for t in tokens[:5]))
    return index


def loss_curve(run_dir: Path) -> dict[str, list] | None:
    p = run_dir / "metrics.jsonl"
    if not p.is_file():
        return None
    out: dict[str, list] = {"step": [], "train_loss": [], "val_step": [], "val_loss": []}
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        out["step"].append(row["step"])
        out["train_loss"].append(row.get("train_loss"))
        if row.get("val_loss") is not None:
            out["val_step"].append(row["step"])
            out["val_loss"].append(row["val_loss"])
    return out


@torch.no_grad()
def router_plot_data(model: Any, corpus: Corpus, layer: int, n_tokens: int, device: str) -> dict[str, Any] | None:
    """``MoE.router_analysis`` on the corpus' first ``n_tokens`` tokens (moex MoE layers only)."""
    from ..model.gpt import GPT
    from ..model.moe import MoE

    if not isinstance(model, GPT) or not isinstance(model.h[layer].mlp, MoE):
        return None
    length = max(len(r) for r in corpus.rows)
    rows = [r for r in corpus.rows if len(r) == length][: max(1, n_tokens // length)]
    x = model.mlp_input(torch.tensor(rows, device=device), layer).reshape(-1, model.cfg.d_model).float()
    a = model.h[layer].mlp.router_analysis(x, sample=2000)
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in a.items()}


def model_info(model: Any, checkpoint: str) -> dict[str, Any]:
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        keys = ("mlp", "n_layer", "d_model", "n_head", "ctx", "vocab_size", "d_mlp", "n_experts", "moe_top_k",
                "router", "expert_act")
        return {"name": Path(checkpoint).name, "class": "moex GPT", **{k: getattr(cfg, k) for k in keys
                                                                         if hasattr(cfg, k)}}
    c = model.model.config
    return {"name": Path(checkpoint).name, "class": model.name, "n_layer": model.n_layers,
            **{k: getattr(c, k) for k in ("hidden_size", "num_experts", "num_local_experts", "num_experts_per_tok",
                                          "vocab_size") if getattr(c, k, None) is not None}}


def copy_assets(out: Path) -> None:
    src = resources.files("moex.browse") / "assets"
    template = (src / "page.html").read_text()
    for name in PAGES:  # the same page, told which kind it is
        (out / name).write_text(template.replace("{kind}", name.removesuffix(".html")))
    (out / "assets").mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        (out / "assets" / name).write_text((src / name).read_text())
    (out / "assets" / "pieces.js").write_text(pieces_script())


def pieces_script() -> str:
    """python-chess's piece definitions, square colours and geometry, for boards drawn in the page."""
    import re

    import chess
    import chess.svg

    board = chess.Board("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w - - 0 1")
    svg = chess.svg.board(board, coordinates=False)
    defs = re.search(r"<defs>.*</defs>", svg, re.S).group(0)
    spec = {"defs": defs, "square": chess.svg.SQUARE_SIZE, "colors": chess.svg.DEFAULT_COLORS}
    return f"MOEX.pieces = {json.dumps(spec)};\n"


# the build --------------------------------------------------------------------------------------------------
def build_site(checkpoint: str | Path, out: str | Path, games: str | Path | None = None,
               data: list[str] | None = None, layer: int | None = None, site: str = "mlp",
               autointerp: str | Path | None = None, probe: str | Path | None = None,
               experts: str | Path | None = None, cfg: BrowseConfig | None = None, device: str = "cpu",
               progress: bool = True, chess_eval: str | Path | None = None) -> dict[str, Any]:
    """Build the site for ``checkpoint`` (a moex run, or a Hugging Face model directory for text) at
    ``site`` of ``layer`` on chess ``games`` or text ``data``; returns what ``site.json`` records."""
    from ..interp.readers import MoexReader
    from ..interp.hf_readers import load_model_or_reader

    t0 = time.time()
    cfg = cfg or BrowseConfig()
    out = Path(out)
    if (games is None) == (not data):
        raise MoexError("give chess games (--games) or text (--data), one of the two")
    if out.exists() and any(out.iterdir()) and not (out / SITE_JSON).exists():
        raise MoexError(f"{out} exists and is not a moex site; choose another --out")
    checkpoint = str(checkpoint)
    model = load_model_or_reader(checkpoint)
    reader = model if hasattr(model, "capture") else MoexReader(model)
    s = site_for(model, site, layer)
    fingerprint = model_fingerprint(model)
    ai = read_autointerp(autointerp, fingerprint, checkpoint, s) if autointerp else None
    ex = read_experts(experts, fingerprint, checkpoint, s.layer) if experts else None
    pr = read_probe(probe, fingerprint, checkpoint, s.layer) if probe else None
    ce = read_chess_eval(chess_eval, fingerprint, checkpoint) if chess_eval else None
    corpus = chess_corpus(model, games, checkpoint, cfg) if games is not None else \
        text_corpus(model, list(data), checkpoint, cfg)
    st = feature_stats(s, corpus.rows, corpus.window, cfg.top, cfg.per_decile if corpus.kind == "text" else 0,
                       fmax_rows=corpus.n_train, positions=corpus.positions, device=device, seed=cfg.seed,
                       progress=progress, vocab=corpus.vocab if corpus.kind == "chess" else 0)
    extras = chess_extras(corpus, st, cfg, device) if corpus.kind == "chess" else None
    is_moe = reader.kinds[s.layer] == "moe"
    es = expert_stats(reader, corpus.rows, s.layer, corpus.window, corpus.vocab, cfg.top, progress=progress) \
        if is_moe else None

    tmp = out.parent / f".{out.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    copy_assets(tmp)
    index = feature_pages(corpus, st, extras, ai, tmp, progress,
                          units_per_expert=es.units_per_expert if es is not None and s.name == "mlp" else 0)
    expert_index = expert_pages(corpus, es, ex, tmp, units_are_features=s.name == "mlp") if es is not None else None
    chess_scores = None
    if extras:
        sc = extras["scores"]
        chess_scores = {k: sc[k] for k in ("coverage", "reconstruction", "coverage_per_bsp",
                                           "reconstruction_per_board", "n_games", "n_positions")}
        chess_scores.update(alive=sc["pieces"]["alive_features"], features=sc["pieces"]["n_features"],
                            coverage_by_threshold=sc["pieces"]["coverage_by_threshold"],
                            reconstruction_by_threshold=sc["pieces"]["reconstruction_by_threshold"],
                            definitions=sc["definitions"])
    record = {"checkpoint": checkpoint, "fingerprint": fingerprint, "kind": corpus.kind, "site": s.name,
              "layer": s.layer, "width": s.width, "moe": is_moe, "rows": len(corpus.rows), "tokens": st.n_tokens,
              "games": str(games) if games is not None else None, "data": list(map(str, data or [])),
              "autointerp": str(autointerp) if autointerp else None, "probe": str(probe) if probe else None,
              "experts": str(experts) if experts else None, "chess_eval": str(chess_eval) if chess_eval else None,
              "config": cfg.to_dict()}
    model_page = {**record, "model": model_info(model, checkpoint),
                  "mean_l0": _r(float(st.firing.sum()) / max(1, st.n_tokens)),
                  "alive": int((st.firing > 0).sum()),
                  "loss": loss_curve(Path(checkpoint)), "chess": chess_scores,
                  "router": router_plot_data(model, corpus, s.layer, cfg.router_tokens, device),
                  "probe": pr, "chess_eval": ce, "experts_explained": {k: ex.get(k) for k in ("mean_f1", "scorer", "mean_token_f1", "mean_random_token_f1",
                                                               "mean_routing_f1")}
                  | {"judge": judge_line(ex["judge"]) if ex.get("llm") else None} if ex else None,
                  "autointerp": {k: ai[k] for k in ("llm", "activation_rule", "scorer", "features_scored")}
                  | {"detection": ai["detection"]["accuracy"], "fuzzing": ai["fuzzing"]["accuracy"],
                     "yes_rate": ai["detection"].get("yes_rate"),
                     "token_detection": ai["token_baseline"]["detection"]["accuracy"],
                     "random_detection": ai["token_baseline"].get("random_detection", {}).get("accuracy"),
                     "judge": judge_line(ai.get("judge")) if ai.get("llm") else None} if ai else None}
    _js(tmp / "data" / "model.js", "model", model_page)
    judges = {"features": (model_page["autointerp"] or {}).get("judge"),
              "experts": (model_page["experts_explained"] or {}).get("judge")}  # the verdicts head the index too
    _js(tmp / "data" / "index.js", "index", {"title": f"{Path(checkpoint).name}: {s.name} layer {s.layer}",
                                              "kind": corpus.kind, "features": index, "experts": expert_index,
                                              "judge": judges})
    record["seconds"] = round(time.time() - t0, 2)
    write_json(tmp / SITE_JSON, record)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return record
