"""``moex autointerp``: cache -> sample -> explain -> score (detection, fuzzing) -> per-feature JSON, a
summary table and the Fig. 8-style plot (accuracy per activation decile and on non-activating windows).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifacts import read_json, read_output, write_json
from ..config import Config
from ..data.text.build import sniff_text
from ..errors import MoexError
from ..plotting import pyplot, save_figure
from .cache import cache_activations, iter_rows
from .examples import sample_from_stats
from .metrics import Answer, binary_metrics, decile_table, format_accuracy
from .prompts import explainer_messages, has_explanation, read_explanation
from .scoring import detection, fuzzing, scoring_mode
from .judge_check import JudgeCheckConfig, NotEnoughText, check_judge, judge_flag, judge_line, require_passed
from .token_baseline import token_baseline


@dataclass
class AutointerpConfig(Config):
    label: ClassVar[str] = "autointerp"

    window: int = 32
    n_explain: int = 20
    per_decile: int = 10
    n_deciles: int = 10
    n_negative: int = 100
    per_prompt: int = 5
    concurrency: int = 4
    max_tokens: int = 200_000  # corpus tokens cached
    rule: str = "auto"  # nonzero | topk:K | auto (topk:32 when the site is dense)
    scorer: str = "auto"  # list | probability | auto (probability when the backend gives token probabilities)
    similar_negatives: int = 0  # also score windows where the feature is off but the cached feature with the
    # most similar top tokens fires (0: off)
    bos: bool = True
    seed: int = 0


def text_codec(model: Any) -> tuple[Any, Any, int | None]:
    """(encode, decode one token, BOS id) for the model: for moex models the tokenizer of the run it was read
    from (its tokenizer.json, else GPT-2 BPE), the model's own tokenizer for a Hugging Face directory."""
    from ..data.text.tokenizer import load_tokenizer

    path = getattr(model, "path", None)
    if path is None:
        tok = load_tokenizer(getattr(model, "source_dir", None))
        return tok.encode, lambda t: tok.decode([t]), tok.eot
    from transformers import AutoTokenizer

    try:
        # the loaded model's config: reading a moex export's config again would ask to trust its code
        tok = AutoTokenizer.from_pretrained(str(path), config=model.model.config)
    except (OSError, ValueError) as e:
        raise MoexError(f"{path}: no tokenizer to read the text with ({str(e).splitlines()[0]})") from None
    return (lambda text: tok.encode(text, add_special_tokens=False)), (lambda t: tok.decode([t])), tok.bos_token_id


def iter_text_tokens(data: list[str], max_tokens: int, encode: Any = None, bos: int | None = None,
                     piece_chars: int = 200_000) -> Iterator[int]:
    """Tokens of text files (``encode``, default GPT-2 BPE; each file led by ``bos``), read and encoded in
    pieces of about ``piece_chars`` characters cut at line ends, or of a ``moex data text build`` directory's
    validation blocks (GPT-2 tokens); at most ``max_tokens``, streamed (memory does not grow with the corpus)."""
    from ..data.loader import BlockData
    from ..data.text.tokenizer import EOT

    if encode is None:
        from ..data.text.tokenizer import encode
        bos = EOT
    n = 0
    for d in data:
        p = Path(d)
        if (p / "meta.json").exists():
            pieces = BlockData(p).iter_blocks("val")
        elif p.is_file():
            lead = [[bos]] if bos is not None else []
            pieces = itertools.chain(lead, (encode(t) for t in text_pieces(p, piece_chars)))
        else:
            raise MoexError(f"{d}: neither a text file nor a data directory (meta.json)")
        for piece in pieces:
            for t in piece:
                if n >= max_tokens:
                    return
                yield t
                n += 1


def text_rows(model: Any, data: list[str], max_tokens: int, window: int, bos: bool = True) -> tuple[Iterator, Any]:
    """(rows, decode one token): the corpus as rows of min(context, 256) tokens for ``model``, each led by
    its BOS token when ``bos``, streamed; the first row is read here, so an empty corpus fails early."""
    encode, decode_one, bos_id = text_codec(model)
    ctx = getattr(getattr(model, "cfg", None), "ctx", 256)
    length = min(ctx, 256)
    if length < window:
        raise MoexError(f"the model's context {ctx} is shorter than the window of {window} tokens "
                        f"(set window=N with N <= {ctx})")
    rows = iter_rows(iter_text_tokens(data, max_tokens, encode, bos_id), length, bos_id if bos else None)
    first = list(itertools.islice(rows, 1))
    if not first:
        raise MoexError(f"{', '.join(map(str, data))}: fewer tokens than one row of {length}")
    return itertools.chain(first, rows), decode_one


def text_pieces(path: Path, piece_chars: int) -> Iterator[str]:
    """A text file streamed in pieces of about ``piece_chars`` characters (whole lines), after ``sniff_text``."""
    sniff_text(path)
    buf: list[str] = []
    size = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            buf.append(line)
            size += len(line)
            if size >= piece_chars:
                yield "".join(buf)
                buf, size = [], 0
    if buf:
        yield "".join(buf)


def top_tokens(cache, feature: int, maxima: np.ndarray, window: int, n_windows: int = 50, n: int = 10) -> set[int]:
    """The ``n`` tokens on which the feature fires most often in its ``n_windows`` strongest windows."""
    from collections import Counter

    best = np.argsort(-maxima)[:n_windows]
    best = best[maxima[best] > 0]
    if not len(best):
        return set()
    tok, act = cache.load_windows(feature, best, window)
    return {t for t, _ in Counter(tok[act > 0].tolist()).most_common(n)}


def add_similar_negatives(ex, cache, stats: dict, tops: dict, n: int, window: int, seed: int) -> None:
    """Windows where ``ex.feature`` is zero but the cached feature whose top tokens overlap its own most
    (Jaccard) fires: hard negatives, scored with decile -2 ("similar")."""
    from .examples import Window

    f = ex.feature
    sims = {g: len(tops[f] & tops[g]) / max(1, len(tops[f] | tops[g])) for g in tops if g != f}
    g = max(sims, key=sims.get, default=None)
    if g is None or sims[g] == 0:
        return
    taken = {w.index for w in ex.non_activating}
    cand = np.array([i for i in np.flatnonzero((stats[f][1] == 0) & (stats[g][0] > 0)) if i not in taken])
    if not len(cand):
        return
    pick = np.random.default_rng([seed, f, 2]).choice(cand, size=min(n, len(cand)), replace=False)
    tok, act = cache.load_windows(f, pick, window)
    ex.non_activating += [Window(int(i), tok[k], act[k], -2) for k, i in enumerate(pick)]
    ex.similar_to = g


def choose_rule(site, rows: list[list[int]], device: str) -> str:
    from ..interp.sites import collect

    feats = next(collect(site, rows[:2], batch=2, device=device)).features
    return "topk:32" if (feats == 0).float().mean() < 0.01 else "nonzero"


def judge_for_run(llm: Any, model: Any, data: list[str], mode: str, out: Path, window: int, per_prompt: int = 5,
                  require: bool = False, seed: int = 0) -> dict[str, Any]:
    """The judge check of ``llm`` on synthetic features from ``data`` read with ``model``'s tokenizer (None:
    GPT-2 BPE), kept in ``out/judge_check.json`` (read back when the same judge, scorer, settings and data ran
    it before); with ``require`` a failing judge is an error (``JudgeError``)."""
    cfg = JudgeCheckConfig(window=window)
    key = {"judge": getattr(llm, "name", type(llm).__name__), "scorer": mode, "config": asdict(cfg),
           "data": [str(d) for d in data]}
    path = out / "judge_check.json"
    if path.exists() and all(read_json(path).get(k) == v for k, v in key.items()):
        check = read_json(path)
    else:
        rows, decode_one = text_rows(model, data, 100_000, window, bos=False)
        try:
            check = check_judge(llm, rows, decode_one, mode, cfg, per_prompt=per_prompt, seed=seed)
        except NotEnoughText as e:  # the run goes on, its scores marked unverified
            check = {**key, "passed": False, "skipped": str(e)}
        check["data"] = key["data"]
        write_json(path, check)
    if require:
        require_passed(check)
    return check


def run_autointerp(model: Any, data: list[str], out: str | Path, llm: Any, layer: int | None = None,
                   site: str = "mlp", n_features: int = 10, feature_ids: list[int] | None = None,
                   cfg: AutointerpConfig | None = None, device: str = "cpu", progress: bool = True,
                   require_judge: bool = False) -> dict[str, Any]:
    """Explain and score features of ``model`` (a moex GPT or a reader) at ``site``/``layer`` with ``llm``
    (checked first on synthetic features: ``judge_check``; ``require_judge`` makes a failing judge an error),
    and with the token baseline and a random explanation beside it; ``llm`` None: the baselines alone."""
    from ..interp.sites import model_fingerprint, site_for

    cfg = cfg or AutointerpConfig()
    out = Path(out)
    s = site_for(model, site, layer)
    mode = scoring_mode(llm, cfg.scorer) if llm is not None else None
    rows, decode_one = text_rows(model, data, cfg.max_tokens, cfg.window, cfg.bos)
    first = list(itertools.islice(rows, 2))
    rows = itertools.chain(first, rows)
    rule = choose_rule(s, first, device) if cfg.rule == "auto" else cfg.rule
    rng = np.random.default_rng(cfg.seed)
    if feature_ids is None:
        feature_ids = sorted(rng.choice(s.width, size=min(n_features, s.width), replace=False).tolist())
    bad = [f for f in feature_ids if not 0 <= f < s.width]
    if bad:
        raise MoexError(f"feature ids {bad} out of range: the site has {s.width} features")
    judge = (judge_for_run(llm, model, data, mode, out, cfg.window, cfg.per_prompt, require_judge, cfg.seed)
             if llm is not None else None)
    cache = cache_activations(s, rows, feature_ids, out / "cache", rule=rule, device=device, progress=progress)
    tok_text = decode_one
    results, skipped, all_det, all_fuzz, base_det, base_fuzz, chance_det = [], {}, [], [], [], [], []
    background = cache.token_counts()
    stats = {f: cache.window_stats(f, cfg.window) for f in feature_ids}
    tops = {f: top_tokens(cache, f, stats[f][0], cfg.window) for f in feature_ids} if cfg.similar_negatives else {}
    # a feature already scored by this model, LLM, site and settings is read back, not asked again: a run that
    # stopped (an endpoint down after its retries, Ctrl-C) continues where it was
    llm_name = getattr(llm, "name", type(llm).__name__) if llm is not None else None
    run_key = {"fingerprint": model_fingerprint(model), "llm": llm_name,
               "site": s.name, "layer": s.layer, "rule": rule, "scorer": mode, "config": asdict(cfg)}
    resumed = 0
    for f in feature_ids:
        done = out / "features" / f"{f}.json"
        if (done.exists() and (rec := read_json(done)).get("run") == run_key
                and "random_detection" in rec.get("answers", {})):
            answers = {k: [Answer(*a) for a in v] for k, v in rec["answers"].items()}
            all_det += answers["detection"]
            all_fuzz += answers["fuzzing"]
            base_det += answers["token_detection"]
            base_fuzz += answers["token_fuzzing"]
            chance_det += answers["random_detection"]
            results.append(rec)
            resumed += 1
            continue
        maxima, nonzero = stats[f]
        ex = sample_from_stats(f, maxima, nonzero, lambda idx, f=f: cache.load_windows(f, idx, cfg.window),
                               cfg.n_explain, cfg.per_decile, cfg.n_deciles, cfg.n_negative, seed=cfg.seed)
        if ex.skipped:
            skipped[f] = ex.skipped
            continue
        if cfg.similar_negatives:
            add_similar_negatives(ex, cache, stats, tops, cfg.similar_negatives, cfg.window, cfg.seed)
        if llm is not None:
            reply = llm.complete(explainer_messages(ex.explain, tok_text))
            explanation = read_explanation(reply)
            det, det_fail = detection(llm, explanation, ex, tok_text, cfg.per_prompt, cfg.concurrency, cfg.seed, mode)
            fuz, fuz_fail = fuzzing(llm, explanation, ex, tok_text, cfg.per_prompt, cfg.concurrency, cfg.seed, mode)
        else:
            reply, explanation, det, fuz, det_fail, fuz_fail = None, None, [], [], {}, {}
        all_det += det
        all_fuzz += fuz
        base = token_baseline(ex, background, cfg.seed)
        base_det += base["detection"]
        base_fuzz += base["fuzzing"]
        chance = base["random_detection"]
        chance_det += chance
        rec = {"feature": f, "explanation": explanation, "explainer_reply": reply, "balanced": ex.balanced,
               "explanation_in_format": llm is None or has_explanation(reply),
               "detection": {**binary_metrics(det), "failures": dict(det_fail),
                             "deciles": decile_table(det, cfg.n_deciles)},
               "fuzzing": {**binary_metrics(fuz), "failures": dict(fuz_fail)},
               "token_baseline": {**base["scores"], "explanation": base["explanation"].text(tok_text),
                                  "random_detection": binary_metrics(chance)},
               "run": run_key,
               "answers": {k: [[a.label, a.decile, a.prediction, a.probability] for a in v]
                           for k, v in (("detection", det), ("fuzzing", fuz), ("token_detection", base["detection"]),
                                        ("token_fuzzing", base["fuzzing"]), ("random_detection", chance))},
               "examples": {"explain": [w.index for w in ex.explain], "test": [[w.index, w.decile] for w in ex.test],
                            "non_activating": [w.index for w in ex.non_activating if w.decile != -2],
                            "similar_negatives": [w.index for w in ex.non_activating if w.decile == -2],
                            "similar_to_feature": ex.similar_to}}
        write_json(out / "features" / f"{f}.json", rec)
        results.append(rec)
    summary = {"model": getattr(model, "name", type(model).__name__), "fingerprint": model_fingerprint(model),
               "site": s.name, "layer": s.layer, "width": s.width,
               "llm": llm_name, "activation_rule": rule, "scorer": mode, "judge": judge,
               "config": asdict(cfg),
               "features_scored": len(results), "features_resumed": resumed, "features_skipped": skipped,
               "rows": cache.n_rows,
               "features_balanced": sum(bool(r["balanced"]) for r in results),
               "explanations_out_of_format": sum(not r["explanation_in_format"] for r in results),
               "detection": {**binary_metrics(all_det), "deciles": decile_table(all_det, cfg.n_deciles)},
               "fuzzing": binary_metrics(all_fuzz),
               "token_baseline": {"detection": binary_metrics(base_det), "fuzzing": binary_metrics(base_fuzz),
                                  "random_detection": binary_metrics(chance_det)},
               "per_feature": [{"feature": r["feature"], "explanation": r["explanation"],
                                "detection_accuracy": r["detection"]["accuracy"],
                                "token_explanation": r["token_baseline"]["explanation"],
                                "token_detection_accuracy": r["token_baseline"]["detection"]["accuracy"],
                                "random_detection_accuracy": r["token_baseline"]["random_detection"]["accuracy"],
                                "fuzzing_accuracy": r["fuzzing"]["accuracy"],
                                "detection_failed": r["detection"]["failed"], "fuzzing_failed": r["fuzzing"]["failed"],
                                "balanced": bool(r["balanced"]),
                                "failed": r["detection"]["failed"] + r["fuzzing"]["failed"]} for r in results]}
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(format_summary(summary))
    plot_deciles({"this model": summary}, out / "deciles.png")
    return summary


def _auc(m: dict[str, Any]) -> str:
    auc = m.get("auc")
    return "-" if auc is None or auc != auc else f"{auc:.3f}"  # no probabilities (or one class): no AUC


def format_summary(s: dict[str, Any]) -> str:
    d, fz = s["detection"], s["fuzzing"]
    flag = judge_flag(s.get("judge"))
    lines = [f"# Automated interpretability: {s['model']}, {s['site']} layer {s['layer']}\n",
             (f"LLM {s['llm']}: {judge_line(s.get('judge'))}.\n" if s["llm"] else
              "No LLM: the token baseline and random explanations only.\n"),
             (f"LLM {s['llm']} ({s['scorer']} scorer); " if s["llm"] else "")
             + f"activating = {s['activation_rule']}; {s['features_scored']} features scored "
             f"({s.get('features_balanced', 0)} of them, with too few activating windows for the full test set, on a "
             f"balanced set, marked *), {len(s['features_skipped'])} skipped; "
             + (f"{s.get('explanations_out_of_format', 0)} explainer replies without an [EXPLANATION]: line (their "
                "last line taken instead)" if s["llm"] else "explained and scored by the token baseline") + ".\n",
             "| scorer | accuracy (95% CI) | balanced acc. | yes rate | precision | recall | F1 | AUC | answered "
             "| failed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = s.get("token_baseline", {})
    for name, m in ((f"detection{flag}", d if s["llm"] else None), (f"fuzzing{flag}", fz if s["llm"] else None),
                    ("detection, token baseline (no LLM)", base.get("detection")),
                    ("fuzzing, token baseline (no LLM)", base.get("fuzzing")),
                    ("detection, random tokens (chance)", base.get("random_detection"))):
        if m is None:
            continue
        lo, hi = m["accuracy_ci95"]
        acc = format_accuracy(m) + (f" ({lo:.3f}-{hi:.3f})" if m["accuracy"] is not None else "")
        yes = "-" if m.get("yes_rate") is None else f"{m['yes_rate']:.3f}"
        lines.append(f"| {name} | {acc} | {m['balanced_accuracy']:.3f} | {yes} | "
                     f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {_auc(m)} | "
                     f"{m['n']} | {m['failed']} |")
    if s["llm"]:
        lines += ["", "Detection accuracy per activation decile (0 = weakest) and on non-activating windows:", "",
                  "| decile | n | accuracy | 95% CI | failed |", "|---|---|---|---|---|"]
        for k, r in d["deciles"].items():
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            lines.append(f"| {k} | {r['n']} | {acc} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} | {r['failed']} |")
    llm_head = f"explanation | detection{flag} | fuzzing{flag} | failed | " if s["llm"] else ""
    lines += ["", f"| feature | {llm_head}token baseline | its detection | random tokens' detection |",
              "|---" * (4 + 4 * bool(s["llm"])) + "|"]
    for p in s["per_feature"]:
        det, fuz = ({"accuracy": p[f"{k}_accuracy"], "failed": p.get(f"{k}_failed", 0)} for k in ("detection", "fuzzing"))
        base_acc, chance_acc = p.get("token_detection_accuracy"), p.get("random_detection_accuracy")
        llm_cols = (f"{p['explanation'][:80]} | {format_accuracy(det)} | {format_accuracy(fuz)} | {p['failed']} | "
                    if s["llm"] else "")
        lines.append(f"| {p['feature']}{'*' if p.get('balanced') else ''} | {llm_cols}"
                     f"{p.get('token_explanation', '-')[:60]} | {'-' if base_acc is None else f'{base_acc:.3f}'} | "
                     f"{'-' if chance_acc is None else f'{chance_acc:.3f}'} |")
    return "\n".join(lines) + "\n"


def plot_deciles(summaries: dict[str, dict[str, Any]], path: Path) -> bool:
    plt = pyplot("decile plot")
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, s) in enumerate(summaries.items()):
        rows = s["detection"]["deciles"]
        keys = list(rows)
        acc = [np.nan if rows[k]["accuracy"] is None else rows[k]["accuracy"] for k in keys]
        known = [rows[k]["accuracy"] is not None for k in keys]
        err = [[max(0.0, a - rows[k]["ci95"][0]) if ok else 0 for a, k, ok in zip(acc, keys, known)],
               [max(0.0, rows[k]["ci95"][1] - a) if ok else 0 for a, k, ok in zip(acc, keys, known)]]
        x = np.arange(len(keys)) + 0.8 * (i - (len(summaries) - 1) / 2) / max(1, len(summaries))
        ax.errorbar(x, acc, yerr=err, fmt="o", capsize=3, label=name)
        ax.set_xticks(np.arange(len(keys)), [k if not k.isdigit() else str(int(k) + 1) for k in keys])
    ax.set_xlabel("activation decile (1 = weakest); not = non-activating windows")
    ax.set_ylabel("detection accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def compare(dirs: list[str | Path], out: str | Path | None = None) -> str:
    """Several runs side by side: a Markdown table and, with ``out``, the plot."""
    summaries = {str(d): read_output(d, "summary.json", "autointerp")[1] for d in dirs}
    lines = ["| run | site | features | detection acc. | fuzzing acc. | failed |", "|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        flag = judge_flag(s.get("judge"))
        lines.append(f"| {name} | {s['site']} L{s['layer']} | {s['features_scored']} | "
                     f"{format_accuracy(s['detection'])}{flag} | {format_accuracy(s['fuzzing'])}{flag} | "
                     f"{s['detection']['failed'] + s['fuzzing']['failed']} |")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        plot_deciles(summaries, Path(out) / "deciles.png")
        (Path(out) / "compare.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
