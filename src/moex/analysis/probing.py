"""k-sparse probing of dense neurons vs expert neurons (Gurnee et al. 2023, as "The Expert Strikes Back"
applies it; METHODS sec 7).

For one concept and one set of units (a dense MLP's hidden units, or one expert's units on the tokens
routed to it, not multiplied by the router weight): a stratified 75/25 split; units ranked by
|mean(positives) - mean(negatives)| on the train part; a logistic regression (C = 1, L2, saga, 500
iterations, balanced classes, seed 42) on the top k units, k in {1, 2, 4, ..., 64}; binary F1 on the
test part. A (layer, expert) set with fewer than ``min_count`` positives or negatives is skipped and
counted. Per layer both the reference's number (the max over experts: an MoE gets more draws) and the
mean over experts are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.text.build import sniff_text
from ..data.text.concepts import ConceptSet, Tokenize, concept_sets, read_conllu, regex_labels, bounded_pieces
from ..data.text.tokenizer import gpt2_offsets
from ..errors import MoexError
from ..plotting import pyplot, save_figure

KS = (1, 2, 4, 8, 16, 32, 64)


def rank_units(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Units in decreasing |mean over positives - mean over negatives|."""
    diff = np.abs(x[y == 1].mean(0) - x[y == 0].mean(0))
    return np.argsort(-diff, kind="stable")


def split(y: np.ndarray, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, seed: int = 42):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, solver="saga", max_iter=500, class_weight="balanced",
                              random_state=seed).fit(x_train, y_train)


def k_sparse_probe(x: np.ndarray, y: np.ndarray, ks: tuple[int, ...] = KS, seed: int = 42) -> dict[str, Any]:
    """F1 of a probe on the top-k units for every k (k above the number of units is left out)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import f1_score

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    tr, te = split(y, seed)
    order = rank_units(x[tr], y[tr])
    f1 = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in ks:
            if k > x.shape[1]:
                break
            units = order[:k]
            probe = fit_probe(x[tr][:, units], y[tr], seed)
            f1[k] = float(f1_score(y[te], probe.predict(x[te][:, units])))
    return {"f1": f1, "top_units": order[:max(ks)].tolist(), "n_train": len(tr), "n_test": len(te),
            "positives": int(y.sum()), "negatives": int((1 - y).sum())}


@dataclass
class LayerProbe:
    """One concept at one layer: the dense probe, or every expert's (and the skipped ones)."""

    layer: int
    kind: str
    dense: dict | None = None
    experts: dict[int, dict] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)

    def best(self, k: int) -> float | None:
        """The reference's number: the dense F1, or the max over experts."""
        if self.dense is not None:
            return self.dense["f1"].get(k)
        vals = [e["f1"][k] for e in self.experts.values() if k in e["f1"]]
        return max(vals) if vals else None

    def mean(self, k: int) -> float | None:
        if self.dense is not None:
            return self.dense["f1"].get(k)
        vals = [e["f1"][k] for e in self.experts.values() if k in e["f1"]]
        return float(np.mean(vals)) if vals else None


@torch.no_grad()
def probe_concepts(hf, concepts: dict[str, ConceptSet], layers: list[int], ks: tuple[int, ...] = KS,
                   min_count: int = 50, seed: int = 42, progress: bool = False) -> dict[str, list[LayerProbe]]:
    """k-sparse probes of every concept at ``layers`` of a reader (``interp.hf_readers.HFModel`` or
    ``interp.readers.MoexReader``). Concepts labelled on the same texts (the part-of-speech tags of one
    treebank) share one capture per text and layer."""
    from ..progress import progress_bar

    users: dict[tuple[int, ...], list[tuple[str, int]]] = {}  # a text's token ids -> (concept, its index there)
    for name, cs in concepts.items():
        for i, ids in enumerate(cs.tokens):
            users.setdefault(tuple(ids), []).append((name, i))
    out: dict[str, list[LayerProbe]] = {name: [] for name in concepts}
    for layer in layers:
        hf.check_layer(layer)
        # concept -> {text index: (rows, labels)}, and per expert: rows are put together in each concept's text
        # order, so the probes (their split) are those of the concept alone
        dense: dict[str, dict[int, tuple]] = {name: {} for name in concepts}
        expert: dict[str, dict[int, dict[int, tuple]]] = {name: {} for name in concepts}
        for ids, uses in progress_bar(users.items(), desc=f"layer {layer}", unit=" texts", disable=not progress):
            cap = hf.capture(torch.tensor([ids]), layer)
            per_expert = [cap.expert_units(e) for e in range(cap.n_experts)] if cap.kind == "moe" else []
            for name, i in uses:
                cs = concepts[name]
                lab = {p: 1 for p in cs.positives[i]} | {n: 0 for n in cs.negatives[i]}
                if cap.kind == "dense":
                    rows = sorted(lab)
                    dense[name][i] = (cap.hidden[rows].float().cpu().numpy(), [lab[r] for r in rows])
                    continue
                for e, (token, units) in enumerate(per_expert):
                    keep = [(j, t) for j, t in enumerate(token.tolist()) if t in lab]
                    if keep:
                        expert[name].setdefault(e, {})[i] = (units[[j for j, _ in keep]].float().cpu().numpy(),
                                                             [lab[t] for _, t in keep])
        for name in concepts:
            lp = LayerProbe(layer, hf.kinds[layer])
            if lp.kind == "dense":
                x, y = _in_text_order(dense[name])
                if len(y) and min((y == 1).sum(), (y == 0).sum()) >= min_count:
                    lp.dense = k_sparse_probe(x, y, ks, seed)
            else:
                for e in range(hf.n_experts(layer)):
                    x, y = _in_text_order(expert[name].get(e, {}))
                    if len(y) == 0 or min((y == 1).sum(), (y == 0).sum()) < min_count:
                        lp.skipped.append(e)
                        continue
                    lp.experts[e] = k_sparse_probe(x, y, ks, seed)
            out[name].append(lp)
    return out


def _in_text_order(blocks: dict[int, tuple]) -> tuple[np.ndarray | None, np.ndarray]:
    """(rows, labels) of {text index: (rows, labels)}, concatenated in text order."""
    if not blocks:
        return None, np.zeros(0, dtype=np.int64)
    order = sorted(blocks)
    return np.concatenate([blocks[i][0] for i in order]), np.asarray([v for i in order for v in blocks[i][1]])


def probe_concept(hf, concept: ConceptSet, layers: list[int], ks: tuple[int, ...] = KS, min_count: int = 50,
                  seed: int = 42) -> list[LayerProbe]:
    """k-sparse probes of one concept at ``layers`` (``probe_concepts`` with one concept)."""
    return probe_concepts(hf, {concept.name: concept}, layers, ks, min_count, seed)[concept.name]


def load_reader(path: str | Path, tokenizer: str = "auto") -> tuple[Any, Tokenize]:
    """A reader and its tokenizer (token ids with start characters) for a moex run directory (its
    tokenizer.json, else GPT-2 BPE) or a Hugging Face model directory (its own fast tokenizer;
    ``tokenizer="gpt2"``: moex's offline GPT-2 BPE)."""
    from ..data.text.tokenizer import load_tokenizer
    from ..interp.readers import MoexReader
    from ..interp.hf_readers import load_model_or_reader
    from ..model.gpt import GPT

    loaded = load_model_or_reader(path)
    if isinstance(loaded, GPT):
        tok = load_tokenizer(path)
        if loaded.cfg.vocab_size < tok.vocab_size:
            raise MoexError(f"{path}: vocabulary {loaded.cfg.vocab_size} is smaller than its tokenizer's ({tok.name}, "
                            f"{tok.vocab_size}); probing reads text models")
        return MoexReader(loaded), tok.offsets
    if tokenizer == "gpt2":
        return loaded, gpt2_offsets
    from transformers import AutoTokenizer

    try:
        # the loaded model's config: reading a moex export's config again would ask to trust its code
        tok = AutoTokenizer.from_pretrained(str(path), config=loaded.model.config)
    except (OSError, ValueError) as e:
        raise MoexError(f"{path}: no tokenizer ({str(e).splitlines()[0]}); pass --tokenizer gpt2") from None

    def tokenize(text: str) -> tuple[list[int], list[int]]:
        enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
        return enc["input_ids"], [a for a, _ in enc["offset_mapping"]]

    return loaded, tokenize


def run_probe(model: str | Path, out: str | Path, conllu: list[str] = (), regex: dict[str, str] | None = None,
              texts: list[str] = (), concepts: list[str] | None = None, layers: list[int] | None = None,
              ks: tuple[int, ...] = KS, min_count: int = 50, max_tokens: int = 5000, tokenizer: str = "auto",
              seed: int = 42) -> dict[str, Any]:
    """What ``moex probe`` does: build the concept sets (POS tags of CoNLL-U files, regexes over text
    files, each cut into pieces of at most 300 characters at line breaks: a match across two pieces is not
    counted), probe every concept at ``layers`` (default: all), write ``probe.json``, ``probe.md`` and
    ``probe.png`` (F1 against k) into ``out``."""
    from ..artifacts import write_json
    from ..interp.sites import model_fingerprint

    reader, tokenize = load_reader(model, tokenizer)
    labelled = [s for f in conllu for s in read_conllu(f)]
    if regex:
        docs = []
        for t in texts:
            sniff_text(t)
            docs += bounded_pieces(Path(t).read_text(errors="replace"))
        if not docs:
            raise MoexError("regex concepts need --texts (plain text or code files)")
        labelled += regex_labels(docs, regex)
    if not labelled:
        raise MoexError("no concept source: give --conllu files and/or --regex NAME=PATTERN with --texts")
    sets = concept_sets(labelled, tokenize, concepts, max_tokens=max_tokens, seed=seed, max_len=reader.max_len)
    layers = list(range(reader.n_layers)) if layers is None else [reader.check_layer(i) for i in layers]
    results: dict[str, Any] = {"model": str(model), "fingerprint": model_fingerprint(reader),
                               "reader": reader.name, "ks": list(ks), "min_count": min_count,
                               "layers": layers, "kinds": [reader.kinds[i] for i in layers], "concepts": {}}
    for name, probes in probe_concepts(reader, sets, layers, ks, min_count, seed, progress=True).items():
        cs = sets[name]
        results["concepts"][name] = {
            "positives": cs.n_positive, "negatives": cs.n_negative,
            "layers": [{"layer": p.layer, "kind": p.kind, "best": {k: p.best(k) for k in ks},
                        "mean_over_experts": {k: p.mean(k) for k in ks}, "skipped_experts": p.skipped,
                        "experts_probed": sorted(p.experts)} for p in probes]}
    results["summary"] = summarize_probes(results)
    out = Path(out)
    write_json(out / "probe.json", results)
    (out / "probe.md").write_text(format_probes(results))
    plot_probes(results, out / "probe.png")
    return results


def summarize_probes(results: dict[str, Any]) -> dict[str, Any]:
    """Per k: the mean over concepts of the best layer's F1, for the reference's number (max over experts)
    and for the mean over experts."""
    out: dict[str, Any] = {}
    for key in ("best", "mean_over_experts"):
        per_k = {}
        for k in results["ks"]:
            vals = []
            for c in results["concepts"].values():
                layer_vals = [lay[key][k] for lay in c["layers"] if lay[key].get(k) is not None]
                if layer_vals:
                    vals.append(max(layer_vals))
            per_k[k] = float(np.mean(vals)) if vals else None
        out[key] = per_k
    return out


def format_probes(results: dict[str, Any]) -> str:
    ks = results["ks"]
    lines = [f"# k-sparse probing: {results['reader']}\n",
             "F1 of the best layer per concept; MoE layers: the reference's max over experts / the mean over "
             f"experts (an expert with fewer than {results['min_count']} positives or negatives is skipped).\n",
             "| concept | pos | neg | " + " | ".join(f"k={k}" for k in ks) + " | skipped (layer:experts) |",
             "|---|---|---|" + "---|" * len(ks) + "---|"]
    for name, c in results["concepts"].items():
        cells = []
        for k in ks:
            best = [lay["best"][k] for lay in c["layers"] if lay["best"].get(k) is not None]
            mean = [lay["mean_over_experts"][k] for lay in c["layers"] if lay["mean_over_experts"].get(k) is not None]
            cells.append("-" if not best else f"{max(best):.3f}" if max(best) == max(mean) else
                         f"{max(best):.3f} / {max(mean):.3f}")
        skipped = ", ".join(f"{lay['layer']}:{len(lay['skipped_experts'])}" for lay in c["layers"]
                            if lay["skipped_experts"])
        lines.append(f"| {name} | {c['positives']} | {c['negatives']} | " + " | ".join(cells) + f" | {skipped} |")
    few = [f"{name} ({c['positives']} positives)" for name, c in results["concepts"].items()
           if all(lay["best"].get(k) is None for lay in c["layers"] for k in ks)]
    if few:
        lines.append(f"\nNot probed ('-'): {', '.join(few)}: a probe needs at least {results['min_count']} "
                     f"positive and {results['min_count']} negative tokens (for an MoE layer, among each expert's routed tokens; "
                     "--min-count)")
    return "\n".join(lines) + "\n"


def plot_probes(results: dict[str, Any], path: Path) -> bool:
    plt = pyplot("probe plot")
    if plt is None:
        return False
    ks = results["ks"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, label in (("best", "best layer (MoE: max over experts)"), ("mean_over_experts", "MoE: mean over experts")):
        ys = [results["summary"][key][k] for k in ks]
        ax.plot(ks, [float("nan") if y is None else y for y in ys], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (neurons in the probe)")
    ax.set_ylabel("mean F1 over concepts")
    ax.set_title(results["reader"], fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def compare_probes(dirs: list[str | Path], out: str | Path) -> str:
    """Several ``moex probe`` outputs side by side (dense vs MoE, as the paper's figure): mean best-layer F1
    against k, the reference's max over experts and the mean over experts; ``compare.md`` + ``compare.png``."""
    from ..artifacts import read_output

    runs = {str(d): read_output(d, "probe.json", "probe")[1] for d in dirs}
    ks = sorted({int(k) for r in runs.values() for k in r["summary"]["best"]})
    lines = ["| run | kinds | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    for name, r in runs.items():
        best, mean = r["summary"]["best"], r["summary"]["mean_over_experts"]
        cells = [("-" if best.get(str(k)) is None else f"{best[str(k)]:.3f}" +
                  ("" if mean.get(str(k)) == best.get(str(k)) else f" / {mean[str(k)]:.3f}")) for k in ks]
        lines.append(f"| {name} | {'/'.join(sorted(set(r['kinds'])))} | " + " | ".join(cells) + " |")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = "\n".join(lines) + "\n"
    (out / "compare.md").write_text(table)
    plt = pyplot("probe comparison plot")
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in runs.items():
            for key, style in (("best", "o-"), ("mean_over_experts", "s--")):
                if key == "mean_over_experts" and "moe" not in r["kinds"]:
                    continue
                ys = [r["summary"][key].get(str(k)) for k in ks]
                ax.plot(ks, [float("nan") if y is None else y for y in ys], style,
                        label=f"{Path(name).name} ({'max' if key == 'best' else 'mean'} over experts)"
                        if "moe" in r["kinds"] else Path(name).name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel("mean best-layer F1")
        ax.legend(fontsize=7)
        save_figure(fig, out / "compare.png")
    return table
