"""Expert auto-interpretation ("The Expert Strikes Back", METHODS sec 7): explain a whole expert from the
windows where it matters most and score the explanation.

Per expert of one MoE layer: windows (one random ``window``-token window per document) scored by the
expert-level activation (router weight x norm of the expert's output; a window's score is its max); the
top 20 go to the explainer with the tokens routed to the expert marked; the explanation is scored on the
held-out next 10 (ranks 21-30) against 10 negatives drawn from the other experts' pool windows (ranks
31-40), marked with those experts' routing; precision, recall and F1 per expert, and their mean per
layer. The explainer and scorers are those of ``moex.autointerp``.

Every expert also gets the token baseline (``moex.autointerp.token_baseline``, no LLM): the tokens (or
previous tokens) over-represented among the explain windows' routed positions, scored on the same held-out
and negative windows (window-level detection F1), beside a random explanation of as many tokens drawn by
frequency (its chance level), and as a predictor of routing itself on the held-out windows (position-level
precision, recall and F1 of "the token is named" against "the token is routed to this expert"): how much of
an expert is a token processor, paper two's question. With ``llm=None`` only the baseline runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import write_json
from ..autointerp.examples import FeatureExamples, Window
from ..autointerp.judge_check import judge_flag, judge_line
from ..autointerp.metrics import binary_metrics
from ..autointerp.prompts import explainer_messages, read_explanation
from ..autointerp.scoring import detection, scoring_mode
from ..autointerp.token_baseline import TokenExplanation, token_baseline
from ..errors import MoexError
from ..interp.readers import top_windows
from ..plotting import pyplot, save_figure


def routing_metrics(expl: TokenExplanation, windows: list[Window]) -> dict[str, Any]:
    """Position-level precision, recall and F1 of ``expl``'s token match as a predictor of routing (a
    non-zero expert-level activation) over ``windows``."""
    hit = np.concatenate([expl.matches(w.tokens) for w in windows])
    routed = np.concatenate([np.asarray(w.acts) != 0 for w in windows])
    tp = int((hit & routed).sum())
    precision = tp / hit.sum() if hit.sum() else 0.0
    recall = tp / routed.sum() if routed.sum() else 0.0
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "routed_share": float(routed.mean())}


def explain_experts(reader: Any, documents: list[list[int]], layer: int, llm: Any, decode, window: int = 32,
                    n_explain: int = 20, n_heldout: int = 10, n_negative: int = 10, seed: int = 0,
                    scorer: str = "auto") -> dict[str, Any]:
    """Explain and score every expert of ``layer`` (with ``llm``, and always with the token baseline; ``llm``
    None: the baseline only); returns per-expert records and the layer's means."""
    top = n_explain + n_heldout + n_negative
    res = top_windows(reader, documents, layer, window=window, top=top, seed=seed)
    n_windows = len(res.windows)
    if n_windows < top:
        raise MoexError(f"{n_windows} windows: explaining experts needs at least {top} (more documents)")
    mode = scoring_mode(llm, scorer) if llm is not None else None
    rng = np.random.default_rng(seed)
    background = np.bincount(np.concatenate([np.asarray(d, dtype=np.int64) for d in documents]))

    def win(e: int, rank: int, decile: int) -> Window:
        return Window(res.top[e][rank], res.windows[res.top[e][rank]].numpy(), res.activations[e][rank].numpy(),
                      decile)

    pool = {e: [win(e, r, -1) for r in range(n_explain + n_heldout, top)] for e in res.top}
    experts = []
    for e in res.top:
        explain = [win(e, r, -1) for r in range(n_explain)]
        heldout = [win(e, r, 0) for r in range(n_explain, n_explain + n_heldout)]
        others = [w for g, ws in pool.items() if g != e for w in ws if w.index not in {h.index for h in heldout}]
        negatives = [others[i] for i in rng.choice(len(others), size=min(n_negative, len(others)), replace=False)]
        ex = FeatureExamples(e, explain, heldout, negatives)
        base = token_baseline(ex, background, seed)
        rec = {"expert": e, "explanation": None, "precision": None, "recall": None, "f1": None,
               "token_baseline": {"explanation": base["explanation"].text(decode),
                                  **{k: v for k, v in base["scores"].items() if k not in ("detection", "fuzzing")},
                                  "f1": base["scores"]["detection"]["f1"],
                                  "random_f1": binary_metrics(base["random_detection"])["f1"],
                                  "routing": routing_metrics(base["explanation"], heldout)},
               "explain_windows": [w.index for w in explain], "heldout_windows": [w.index for w in heldout],
               "negative_windows": [w.index for w in negatives]}
        if llm is not None:
            reply = llm.complete(explainer_messages(explain, decode, frac=0.0))
            rec["explanation"] = read_explanation(reply)
            answers, failures = detection(llm, rec["explanation"], ex, decode, per_prompt=n_heldout + n_negative,
                                          concurrency=1, seed=seed, mode=mode, mark_routed=True)
            m = binary_metrics(answers)
            rec.update(precision=m["precision"], recall=m["recall"], f1=m["f1"], answered=m["n"], failed=m["failed"],
                       failures=dict(failures))
        experts.append(rec)
    tb = [x["token_baseline"] for x in experts]
    return {"layer": layer, "scorer": mode, "windows": n_windows, "experts": experts,
            "mean_f1": float(np.mean([x["f1"] for x in experts])) if llm is not None else None,
            "mean_token_f1": float(np.mean([t["f1"] for t in tb])),
            "mean_random_token_f1": float(np.mean([t["random_f1"] for t in tb])),
            "mean_routing_f1": float(np.mean([t["routing"]["f1"] for t in tb]))}


def run_experts(model: str | Path, data: list[str], layers: list[int], llm_spec: Any, out: str | Path,
                window: int = 32, max_tokens: int = 2_000_000, seed: int = 0,
                require_judge: bool = False) -> dict[str, Any]:
    """What ``moex experts`` does: load the model and the LLM (a ``load_llm`` spec, an object with
    ``complete(messages)``, or None for the token baseline alone; an LLM is first put through the judge check,
    ``require_judge`` stopping the run when it fails), read documents (one per text file, or the
    blocks of a text data directory), explain every expert of ``layers``, write JSON and Markdown."""
    from ..autointerp.llm import load_llm
    from ..autointerp.pipeline import judge_for_run, text_codec
    from ..interp.readers import MoexReader
    from ..interp.hf_readers import load_model_or_reader
    from ..interp.sites import model_fingerprint

    loaded = load_model_or_reader(model)
    reader = loaded if hasattr(loaded, "capture") else MoexReader(loaded)
    encode, decode, _ = text_codec(loaded)
    documents = read_documents(data, encode, max_tokens)
    llm = load_llm(llm_spec, cache_dir=Path(out) / "llm-cache") if isinstance(llm_spec, str) else llm_spec
    judge = (judge_for_run(llm, loaded, data, scoring_mode(llm), Path(out), window, per_prompt=20,
                           require=require_judge, seed=seed) if llm is not None else None)
    results = {"model": str(model), "fingerprint": model_fingerprint(loaded), "reader": reader.name,
               "llm": getattr(llm, "name", llm_spec) if llm is not None else None, "judge": judge, "layers": []}
    for layer in layers:
        results["layers"].append(explain_experts(reader, documents, layer, llm, decode, window=window, seed=seed))
    write_json(Path(out) / "experts.json", results)
    (Path(out) / "experts.md").write_text(format_experts(results))
    plot_experts(results, Path(out) / "experts.png")
    return results


def plot_experts(results: dict[str, Any], path: Path) -> bool:
    """F1 of every expert's explanation (LLM, token baseline, random tokens), one panel per layer."""
    plt = pyplot("experts plot")
    if plt is None:
        return False
    layers = results["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(max(4, 0.4 * len(layers[0]["experts"]) + 2) * len(layers), 3.5),
                             squeeze=False)
    for ax, lay in zip(axes[0], layers):
        ids = np.array([x["expert"] for x in lay["experts"]])
        bars = [("token baseline", [x["token_baseline"]["f1"] for x in lay["experts"]]),
                ("random tokens", [x["token_baseline"]["random_f1"] for x in lay["experts"]])]
        if lay["mean_f1"] is not None:
            bars.insert(0, (f"LLM (mean {lay['mean_f1']:.2f})", [x["f1"] for x in lay["experts"]]))
        width = 0.8 / len(bars)
        for i, (label, values) in enumerate(bars):
            ax.bar(ids + (i - (len(bars) - 1) / 2) * width, values, width, label=label)
        ax.set_xlabel("expert")
        ax.set_ylabel("F1 of its explanation")
        ax.set_ylim(0, 1)
        ax.set_title(f"layer {lay['layer']}")
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def read_documents(data: list[str], encode, max_tokens: int) -> list[list[int]]:
    """Documents: each non-empty line of text files (a paragraph, in WikiText), or each block of a data
    directory."""
    from ..data.loader import BlockData

    docs, n = [], 0
    for d in data:
        p = Path(d)
        if (p / "meta.json").exists():
            parts = BlockData(p).iter_blocks("val")
        elif p.is_file():
            parts = (encode(line) for line in p.read_text(errors="replace").splitlines() if line.strip())
        else:
            raise MoexError(f"{d}: neither a text file nor a data directory (meta.json)")
        for doc in parts:
            docs.append(doc)
            n += len(doc)
            if n >= max_tokens:
                return docs
    return docs


def format_experts(results: dict[str, Any]) -> str:
    llm = results["llm"]
    judge = results.get("judge")
    flag = judge_flag(judge)
    lines = [f"# Expert auto-interpretation: {results['reader']}\n",
             (f"LLM {llm}: {judge_line(judge)}." if llm else "No LLM: the token baseline only.")
             + " Token baseline: the tokens over-represented where the expert is routed (no LLM); its detection"
             " F1 on the same held-out and negative windows, that of a random explanation of as many tokens, and"
             " routing F1: the named tokens as a predictor of the positions routed to the expert.\n"]
    for lay in results["layers"]:
        head = (f"mean F1 {lay['mean_f1']:.3f}{flag} ({lay['scorer']} scorer), " if lay["mean_f1"] is not None
                else "")
        lines += [f"## Layer {lay['layer']}: {head}token baseline {lay['mean_token_f1']:.3f}, random tokens "
                  f"{lay['mean_random_token_f1']:.3f}, routing F1 {lay['mean_routing_f1']:.3f} "
                  f"({lay['windows']} windows)\n",
                  f"| expert | explanation | precision | recall | F1{flag} | failed | token explanation | token F1 | "
                  "random F1 | routing F1 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for x in lay["experts"]:
            t = x["token_baseline"]
            llm_cols = (f"{x['explanation'][:80]} | {x['precision']:.3f} | {x['recall']:.3f} | {x['f1']:.3f} | "
                        f"{x['failed']}" if x["f1"] is not None else "- | - | - | - | -")
            lines.append(f"| {x['expert']} | {llm_cols} | {t['explanation'][:60]} | {t['f1']:.3f} | "
                         f"{t['random_f1']:.3f} | {t['routing']['f1']:.3f} |")
        lines.append("")
    return "\n".join(lines)
