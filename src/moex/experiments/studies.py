"""The MoE-X paper's chess studies (``moex experiment chess --study NAME``), each one call.

- ``width`` (Fig. 3): dense GELU MLPs of hidden size D = alpha d: d varied at alpha = 4, alpha in
  {2, 4, 8, 16} at the backbone's d; plus a TopK SAE on the residual stream of (alpha = 4, d).
- ``sparsity`` (Fig. 4): GELU vs ReLU vs TopK (k = D/32, D/8) at alpha = 4 and 8; coverage against the
  measured l0 of the hidden units.
- ``scaling`` (Fig. 5): dense alpha in {4, 8, 16} against Switch and MoE-X with k in {1, 2, 4} of 8 experts
  of width 4d (equal activated parameters: k experts of 4d ~ a dense 4kd), plus a TopK SAE on the dense
  alpha = 4 model whose width makes model + SAE match the MoE-X (k = 2) model's total parameters.
- ``dynamics`` (Fig. 10): coverage, reconstruction and validation loss through training, from the
  training-time evaluation (``eval_chess_every``), for dense GELU and MoE-X.
- ``layers`` (Fig. 11): coverage and reconstruction at every layer of dense GELU and MoE-X.
- ``tsne`` (Fig. 6): 2-D t-SNE of the expert encoder rows (one point per hidden unit, its input weights),
  coloured by expert, for Switch, ReLU experts with a linear router, and MoE-X; the silhouette of the
  expert labels (in the 2-D map and, by cosine, in weight space) says how much they cluster.
Every model is trained from scratch for the scale's ``steps`` on the experiment's data and scored on its
held-out games; finished runs and scores are reused. Each study writes ``study.json`` (rows, scale,
the paper's trend), ``study.md`` and ``study.png`` into ``OUT/NAME``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import write_json
from ..config import ConfigError
from ..data.loader import BlockData
from ..interp.sae import SAEConfig, train_sae
from ..interp.sites import default_layer
from ..model.config import make_config
from ..model.gpt import GPT
from ..model.summary import summarize
from ..plotting import pyplot, save_figure
from .chess import ExperimentSetup, Scale, last_val_loss, score_row, setup_experiment, train_to

PAPER_TRENDS = {
    "width": "Fig. 3: coverage rises with both d and alpha, faster with alpha at equal model size; at d = 512, "
             "alpha = 16 reaches 0.53 against 0.45 for alpha = 4 + SAE (4096 latents).",
    "sparsity": "Fig. 4: sparser activations (ReLU, TopK) usually raise coverage over GELU, more in larger models; "
                "the sparsest setting is not always the best.",
    "scaling": "Fig. 5: scores rise with size; at equal activated parameters MoE-X beats dense and Switch, most in "
               "reconstruction; MoE-X beats dense + SAE at equal total parameters.",
    "dynamics": "Fig. 10: coverage keeps rising through training, also after the validation loss plateaus.",
    "layers": "Fig. 11: reconstruction rises with depth, peaks at layer 6 of 8, then falls.",
    "tsne": "Fig. 6: MoE-X's encoder rows cluster by expert (experts 0, 4, 6, 7 in the paper); Switch's do not.",
}
STUDIES = tuple(PAPER_TRENDS)


@dataclass
class StudyRun:
    name: str
    mlp: str  # MLP preset
    overrides: dict = field(default_factory=dict)  # model keys
    label: str = ""
    series: str = ""  # the plot's series
    x: dict = field(default_factory=dict)  # the study's variables (d, alpha, k, ...)


def study_runs(study: str, sc: Scale) -> list[StudyRun]:
    d = make_config(sc.preset).d_model
    head = make_config(sc.preset).n_head
    if study == "width":
        ds = [v for v in (d // 8, d // 4, d // 2, d) if v >= max(32, head) and v % head == 0]
        runs = [StudyRun(f"d{v}-a4", "gelu", {"d_model": v, "d_mlp": 4 * v}, f"d {v}, alpha 4", "alpha = 4, vary d",
                         {"d": v, "alpha": 4}) for v in ds]
        runs += [StudyRun(f"d{d}-a{a}", "gelu", {"d_mlp": a * d}, f"d {d}, alpha {a}", f"d = {d}, vary alpha",
                          {"d": d, "alpha": a}) for a in (2, 8, 16)]
        return runs
    if study == "sparsity":
        runs = []
        for a in (4, 8):
            width = a * d
            runs += [StudyRun(f"a{a}-gelu", "gelu", {"d_mlp": width}, "GELU", f"alpha {a}", {"alpha": a}),
                     StudyRun(f"a{a}-relu", "relu", {"d_mlp": width}, "ReLU", f"alpha {a}", {"alpha": a})]
            runs += [StudyRun(f"a{a}-topk{k}", "topk", {"d_mlp": width, "topk_k": k}, f"TopK {k}", f"alpha {a}",
                              {"alpha": a, "k": k}) for k in (width // 32, width // 8)]
        return runs
    if study == "scaling":
        runs = [StudyRun(f"dense-a{a}", "gelu", {"d_mlp": a * d}, f"dense alpha {a}", "dense", {"alpha": a})
                for a in (4, 8, 16)]
        for preset, label in (("switch", "Switch"), ("moex", "MoE-X")):
            runs += [StudyRun(f"{preset}-k{k}", preset, {"n_experts": 8, "moe_top_k": k, "d_expert": 4 * d},
                              f"{label} k={k}", label, {"k": k}) for k in (1, 2, 4)]
        return runs
    if study in ("dynamics", "layers"):
        return [StudyRun("gelu", "gelu", {}, "GELU (dense)", "GELU"), StudyRun("moex", "moex", {}, "MoE-X", "MoE-X")]
    if study == "tsne":
        return [StudyRun("switch", "switch", {}, "Switch (GELU experts, linear router)", "switch"),
                StudyRun("moex-relu-linear", "moex-relu-linear", {}, "ReLU experts, linear router", "relu"),
                StudyRun("moex", "moex", {}, "MoE-X (ReLU experts, sparsity router)", "moex")]
    raise ConfigError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")


def _params(model: GPT) -> dict[str, int]:
    s = summarize(model)
    return {"total_params": s["total_params"], "active_params": s["active_params"]}


def _train(setup: ExperimentSetup, run: StudyRun, runs: Path, train_extra: dict | None = None) -> Path:
    sc = setup.scale
    mcfg = make_config(sc.preset, run.mlp, **{**sc.overrides.get(run.mlp, {}), **run.overrides})
    train_to(runs / run.name, sc.steps, mcfg, {**setup.tcfg, **(train_extra or {})})
    return runs / run.name


def _rows(setup: ExperimentSetup, study: str, out: Path, train_extra: dict | None = None) -> list[dict[str, Any]]:
    """Train and score (at the evaluated layer) every run of the study; reuse finished ones."""
    rows = []
    for run in study_runs(study, setup.scale):
        done = out / "rows" / f"{run.name}.json"
        if done.exists():
            rows.append(json.loads(done.read_text()))
            continue
        path = _train(setup, run, out / "runs", train_extra)
        model = GPT.from_pretrained(path)
        row = {**asdict(run), "val_loss": last_val_loss(path), **_params(model),
               **score_row(model, setup.eval_games, setup.device, prefixes=setup.scale.prefixes)}
        write_json(done, row)
        rows.append(row)
    return rows


def _sae_row(setup: ExperimentSetup, out: Path, dense_run: Path, width: int, label: str) -> dict[str, Any]:
    done = out / "rows" / "sae.json"
    if done.exists():
        return json.loads(done.read_text())
    dense = GPT.from_pretrained(dense_run)
    cfg = SAEConfig(d_in=dense.cfg.d_model, d_sae=width, layer=default_layer(dense), steps=setup.scale.sae_steps,
                    k=min(32, width))
    sae = train_sae(dense, BlockData(setup.blocks), cfg, device=setup.device, progress=False)
    sae.save(out / "sae")
    p = _params(dense)
    sae_params = sum(t.numel() for t in sae.parameters())
    row = {"name": "sae", "label": label, "series": "SAE", "x": {"d_sae": width}, "val_loss": None,
           "total_params": p["total_params"] + sae_params, "active_params": p["active_params"] + sae_params,
           **score_row(dense, setup.eval_games, setup.device, sae=sae.cpu(), prefixes=0)}
    write_json(done, row)
    return row


def _width(setup: ExperimentSetup, out: Path) -> dict[str, Any]:
    rows = _rows(setup, "width", out)
    d = make_config(setup.scale.preset).d_model
    rows.append(_sae_row(setup, out, out / "runs" / f"d{d}-a4", setup.scale.sae_width, f"d {d}, alpha 4 + SAE"))
    return {"rows": rows}


def _scaling(setup: ExperimentSetup, out: Path) -> dict[str, Any]:
    rows = _rows(setup, "scaling", out)
    by = {r["name"]: r for r in rows}
    d = make_config(setup.scale.preset).d_model
    # model + SAE (2 d w + w + d parameters) matches the MoE-X k=2 model's total parameters
    width = max(64, (by["moex-k2"]["total_params"] - by["dense-a4"]["total_params"] - d) // (2 * d + 1) // 64 * 64)
    rows.append(_sae_row(setup, out, out / "runs" / "dense-a4", width, f"dense alpha 4 + SAE ({width})"))
    return {"rows": rows, "sae_width": width}


def _dynamics(setup: ExperimentSetup, out: Path) -> dict[str, Any]:
    every = max(1, setup.scale.steps // 8)
    (out / "eval-games.txt").write_text("\n".join(setup.eval_games) + "\n")
    extra = {"eval_chess_every": every, "eval_chess_games": str(out / "eval-games.txt"),
             "eval_chess_n_games": len(setup.eval_games), "eval_interval": every}
    rows = _rows(setup, "dynamics", out, extra)
    curves = {}
    for r in rows:
        log = [json.loads(line) for line in open(out / "runs" / r["name"] / "metrics.jsonl")]
        curves[r["name"]] = [{k: e.get(k) for k in ("step", "val_loss", "chess_coverage", "chess_reconstruction",
                                                    "chess_coverage_per_bsp", "chess_reconstruction_per_board")}
                             for e in log if "chess_coverage" in e]
    return {"rows": rows, "curves": curves, "eval_every": every}


def _layers(setup: ExperimentSetup, out: Path) -> dict[str, Any]:
    rows = _rows(setup, "layers", out)
    per_layer = {}
    for r in rows:
        done = out / "rows" / f"{r['name']}-layers.json"
        if not done.exists():
            model = GPT.from_pretrained(out / "runs" / r["name"])
            write_json(done, [score_row(model, setup.eval_games, setup.device, layer=i, prefixes=0)
                              for i in range(model.cfg.n_layer)])
        per_layer[r["name"]] = json.loads(done.read_text())
    return {"rows": rows, "per_layer": per_layer}


def encoder_rows(model: GPT, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Each expert hidden unit's input weights (its column of W_enc^(j)) and the expert it belongs to."""
    moe = model.h[layer].mlp
    w = moe.w_enc.detach().float().cpu()  # (M, d, D)
    m, _, width = w.shape
    return w.transpose(1, 2).reshape(m * width, -1).numpy(), np.repeat(np.arange(m), width)


def _tsne(setup: ExperimentSetup, out: Path, per_expert: int = 256, seed: int = 0) -> dict[str, Any]:
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    rows = _rows(setup, "tsne", out)
    maps = {}
    rng = np.random.default_rng(seed)
    for r in rows:
        done = out / "rows" / f"{r['name']}-tsne.json"
        if not done.exists():
            model = GPT.from_pretrained(out / "runs" / r["name"])
            x, expert = encoder_rows(model, default_layer(model))
            keep = np.concatenate([rng.permutation(np.flatnonzero(expert == j))[:per_expert]
                                   for j in range(int(expert.max()) + 1)])
            x, expert = x[keep], expert[keep]
            xy = TSNE(2, perplexity=min(30, len(x) // 4), init="pca", random_state=seed).fit_transform(x)
            write_json(done, {"xy": np.round(xy, 4).tolist(), "expert": expert.tolist(),
                              "silhouette_2d": float(silhouette_score(xy, expert)),
                              "silhouette_weights_cosine": float(silhouette_score(x, expert, metric="cosine"))})
        maps[r["name"]] = json.loads(done.read_text())
        r["silhouette_2d"] = maps[r["name"]]["silhouette_2d"]
        r["silhouette_weights_cosine"] = maps[r["name"]]["silhouette_weights_cosine"]
    return {"rows": rows, "maps": maps}


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_study(res: dict[str, Any]) -> str:
    lines = [f"# Study: {res['study']}\n", f"scale {res['scale']} ({res['reduced']}); {res['eval_games']} evaluation "
             "games; coverage / reconstruction as Karvonen's code computes them, B.2 / B.3 as the paper's "
             "appendix writes them.\n", f"Paper: {res['paper_trend']}\n"]
    cols = ["label", "val_loss", "legal_move_rate", "probe_accuracy", "active_params", "total_params", "mean_l0",
            "coverage", "reconstruction", "coverage_per_bsp", "reconstruction_per_board"]
    if res["study"] == "tsne":
        cols += ["silhouette_2d", "silhouette_weights_cosine"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in res["rows"]:
        lines.append("| " + " | ".join(_fmt(r.get(c), 4 if c == "val_loss" else 3) if c != "mean_l0"
                                       else f"{r[c]:.1f}" for c in cols) + " |")
    if res["study"] == "layers":
        for name, per in res["per_layer"].items():
            lines += ["", f"{name}: layer | coverage | reconstruction", "|---|---|---|"]
            lines += [f"| {i} | {p['coverage']:.3f} | {p['reconstruction']:.3f} |" for i, p in enumerate(per)]
    if res["study"] == "dynamics":
        for name, curve in res["curves"].items():
            lines += ["", f"{name}: step | val loss | coverage | reconstruction", "|---|---|---|---|"]
            lines += [f"| {c['step']} | {_fmt(c['val_loss'], 4)} | {c['chess_coverage']:.3f} | "
                      f"{c['chess_reconstruction']:.3f} |" for c in curve]
    return "\n".join(lines) + "\n"


def plot_study(res: dict[str, Any], path: Path) -> bool:
    plt = pyplot("study plot")
    if plt is None:
        return False
    study, rows = res["study"], res["rows"]
    if study == "tsne":
        fig, axes = plt.subplots(1, len(res["maps"]), figsize=(5 * len(res["maps"]), 4.5), squeeze=False)
        for ax, (name, m) in zip(axes[0], res["maps"].items()):
            xy = np.asarray(m["xy"])
            ax.scatter(xy[:, 0], xy[:, 1], c=m["expert"], cmap="tab10", s=3)
            ax.set_title(f"{name}: silhouette {m['silhouette_2d']:.2f}")
            ax.set_xticks([])
            ax.set_yticks([])
    else:
        metrics = ("coverage", "reconstruction")
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, metric in zip(axes, metrics):
            if study == "dynamics":
                for name, curve in res["curves"].items():
                    ax.plot([c["step"] for c in curve], [c[f"chess_{metric}"] for c in curve], "o-", label=name)
                ax.set_xlabel("training step")
            elif study == "layers":
                for name, per in res["per_layer"].items():
                    ax.plot(range(len(per)), [p[metric] for p in per], "o-", label=name)
                ax.set_xlabel("layer")
            else:
                x_key = "mean_l0" if study == "sparsity" else "active_params" if study == "scaling" else "total_params"
                for series in dict.fromkeys(r["series"] for r in rows):
                    pts = sorted((r[x_key], r[metric], r["label"]) for r in rows if r["series"] == series)
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if series != "SAE" else "*", label=series)
                    if study == "sparsity":
                        for x, y, label in pts:
                            ax.annotate(label, (x, y), fontsize=7)
                ax.set_xscale("log")
                ax.set_xlabel({"mean_l0": "measured l0 of the hidden units", "active_params": "activated parameters",
                               "total_params": "model parameters (+ SAE)"}[x_key])
            ax.set_ylabel(f"BSP {metric}")
            ax.legend(fontsize=8)
    fig.suptitle(f"{study} ({res['scale']}); paper: {res['paper_trend']}", fontsize=7, wrap=True)
    save_figure(fig, path)
    return True


def run_study(study: str, out: str | Path, scale: str | Scale = "tiny", seed: int = 0, engine: str = "auto",
              device: str = "auto", workers: int = 0, games_dir: str | None = None,
              settings: dict[str, Any] | None = None, eval_file: str | None = None) -> dict[str, Any]:
    """Train what ``study`` needs (reusing finished runs), score it, and write ``OUT/STUDY/study.{json,md,png}``.
    Data (games, blocks) live in ``OUT`` and are shared by the studies and the tables."""
    if study not in STUDIES:
        raise ConfigError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")
    setup = setup_experiment(out, scale, seed, engine, device, workers, games_dir, settings, eval_file)
    if not setup.master:
        raise ConfigError("studies run in one process (torchrun is for the tables)")
    sdir = setup.out / study
    (sdir / "rows").mkdir(parents=True, exist_ok=True)
    body = {"width": _width, "scaling": _scaling, "dynamics": _dynamics, "layers": _layers, "tsne": _tsne,
            "sparsity": lambda s, o: {"rows": _rows(s, "sparsity", o)}}[study](setup, sdir)
    res = {"study": study, "scale": setup.name, "reduced": setup.scale.reduced, "seed": seed,
           "eval_games": len(setup.eval_games), "device": setup.device, "torch": torch.__version__,
           "config": asdict(setup.scale), "paper_trend": PAPER_TRENDS[study], **body}
    write_json(sdir / "study.json", res)
    (sdir / "study.md").write_text(format_study(res))
    plot_study(res, sdir / "study.png")
    print(format_study(res))
    return res
