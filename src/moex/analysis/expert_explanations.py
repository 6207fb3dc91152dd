"""Expert auto-interpretation ("The Expert Strikes Back", METHODS sec 7): explain a whole expert from the
windows where it matters most and score the explanation.

Per expert of one MoE layer: windows (one random ``window``-token window per document) scored by the
expert-level activation (router weight x norm of the expert's output; a window's score is its max); the
top 20 go to the explainer with the tokens routed to the expert marked; the explanation is scored on the
held-out next 10 (ranks 21-30) against 10 negatives drawn from the other experts' pool windows (ranks
31-40), marked with those experts' routing; precision, recall and F1 per expert, and their mean per
layer. The explainer and scorers are those of ``moex.autointerp``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import write_json
from ..autointerp.examples import FeatureExamples, Window
from ..autointerp.metrics import binary_metrics
from ..autointerp.prompts import explainer_messages, read_explanation
from ..autointerp.scoring import detection, scoring_mode
from ..errors import MoexError
from ..interp.readers import top_windows
from ..plotting import pyplot, save_figure


def explain_experts(reader: Any, documents: list[list[int]], layer: int, llm: Any, decode, window: int = 32,
                    n_explain: int = 20, n_heldout: int = 10, n_negative: int = 10, seed: int = 0,
                    scorer: str = "auto") -> dict[str, Any]:
    """Explain and score every expert of ``layer``; returns per-expert records and the layer's mean F1."""
    top = n_explain + n_heldout + n_negative
    res = top_windows(reader, documents, layer, window=window, top=top, seed=seed)
    n_windows = len(res.windows)
    if n_windows < top:
        raise MoexError(f"{n_windows} windows: explaining experts needs at least {top} (more documents)")
    mode = scoring_mode(llm, scorer)
    rng = np.random.default_rng(seed)

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
        reply = llm.complete(explainer_messages(explain, decode, frac=0.0))
        explanation = read_explanation(reply)
        ex = FeatureExamples(e, explain, heldout, negatives)
        answers, failures = detection(llm, explanation, ex, decode, per_prompt=n_heldout + n_negative,
                                      concurrency=1, seed=seed, mode=mode, mark_routed=True)
        m = binary_metrics(answers)
        experts.append({"expert": e, "explanation": explanation, "precision": m["precision"], "recall": m["recall"],
                        "f1": m["f1"], "answered": m["n"], "failed": m["failed"], "failures": dict(failures),
                        "explain_windows": [w.index for w in explain], "heldout_windows": [w.index for w in heldout],
                        "negative_windows": [w.index for w in negatives]})
    return {"layer": layer, "scorer": mode, "windows": n_windows, "experts": experts,
            "mean_f1": float(np.mean([x["f1"] for x in experts]))}


def run_experts(model: str | Path, data: list[str], layers: list[int], llm_spec: Any, out: str | Path,
                window: int = 32, max_tokens: int = 2_000_000, seed: int = 0) -> dict[str, Any]:
    """What ``moex experts`` does: load the model and the LLM (a ``load_llm`` spec, or an object with
    ``complete(messages)``), read documents (one per text file, or the
    blocks of a text data directory), explain every expert of ``layers``, write JSON and Markdown."""
    from ..autointerp.llm import load_llm
    from ..autointerp.pipeline import text_codec
    from ..interp.readers import MoexReader
    from ..interp.hf_readers import load_model_or_reader
    from ..interp.sites import model_fingerprint

    loaded = load_model_or_reader(model)
    reader = loaded if hasattr(loaded, "capture") else MoexReader(loaded)
    encode, decode, _ = text_codec(loaded)
    documents = read_documents(data, encode, max_tokens)
    llm = load_llm(llm_spec, cache_dir=Path(out) / "llm-cache") if isinstance(llm_spec, str) else llm_spec
    results = {"model": str(model), "fingerprint": model_fingerprint(loaded), "reader": reader.name,
               "llm": getattr(llm, "name", llm_spec), "layers": []}
    for layer in layers:
        results["layers"].append(explain_experts(reader, documents, layer, llm, decode, window=window, seed=seed))
    write_json(Path(out) / "experts.json", results)
    (Path(out) / "experts.md").write_text(format_experts(results))
    plot_experts(results, Path(out) / "experts.png")
    return results


def plot_experts(results: dict[str, Any], path: Path) -> bool:
    """F1 of every expert's explanation, one panel per layer, with the layer mean."""
    plt = pyplot("experts plot")
    if plt is None:
        return False
    layers = results["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(max(4, 0.4 * len(layers[0]["experts"]) + 2) * len(layers), 3.5),
                             squeeze=False)
    for ax, lay in zip(axes[0], layers):
        ax.bar([x["expert"] for x in lay["experts"]], [x["f1"] for x in lay["experts"]])
        ax.axhline(lay["mean_f1"], color="k", ls="--", lw=1, label=f"mean {lay['mean_f1']:.2f}")
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
    lines = [f"# Expert auto-interpretation: {results['reader']}\n", f"LLM {results['llm']}.\n"]
    for lay in results["layers"]:
        lines += [f"## Layer {lay['layer']}: mean F1 {lay['mean_f1']:.3f} ({lay['scorer']} scorer, "
                  f"{lay['windows']} windows)\n", "| expert | explanation | precision | recall | F1 | failed |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {x['expert']} | {x['explanation'][:80]} | {x['precision']:.3f} | {x['recall']:.3f} | "
                  f"{x['f1']:.3f} | {x['failed']} |" for x in lay["experts"]]
        lines.append("")
    return "\n".join(lines)
