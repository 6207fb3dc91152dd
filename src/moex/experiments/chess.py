"""``moex experiment chess``: the MoE-X paper's chess tables (1, 3, 4), the SAE row and the router analysis.

Protocol (the paper does not give every step count; these are the choices, the same at every scale):
- A dense GELU model is trained ``steps`` steps: the GELU row of Table 1 and the "dense" of Table 4.
- The other dense baselines (ReLU, GEGLU, SoLU) and the fine-grained MoEs (Monet-HD/VD, PEER) are
  trained from scratch for ``steps`` steps, with the activated-parameter matching of their presets.
- Switch, MoE-X and the Table 3 ablations are upcycled from the dense GELU model and trained
  ``up_steps`` more; "dense continued" trains the dense model ``up_steps`` more in the same way (fresh
  optimizer and schedule); "MoE-X scratch" trains MoE-X from scratch for ``steps + up_steps``.
  Table 1's Switch and MoE-X rows are the upcycled ones, as in the paper (its Table 1 and 4 agree).
- SAE row: a TopK SAE on the residual stream after the evaluated layer of the dense GELU model.
Every row is scored at the evaluated layer (3/4 depth: layer 6 of 8) on held-out games. A finished row
(``rows/NAME.json``) is not trained or scored again.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MoexError
from ..io import write_json

# Paper Table 1 / 3 / 4 (val loss, coverage, reconstruction); METHODS sec 2.
PAPER = {
    "gelu": (0.213, 0.356, 0.608), "relu": (0.215, 0.312, 0.581), "geglu": (0.209, 0.255, 0.394),
    "solu": (0.216, 0.306, 0.343), "monet-hd": (0.210, 0.312, 0.528), "monet-vd": (0.212, 0.283, 0.482),
    "peer": (0.214, 0.323, 0.426), "switch": (0.212, 0.424, 0.734), "moex": (0.211, 0.428, 0.840),
    "moex-gelu-sparsity": (None, 0.404, 0.740), "moex-relu-linear": (None, 0.418, 0.829),
    "dense-continued": (None, 0.377, 0.674), "moex-scratch": (None, 0.398, 0.657),
}
PAPER_L0 = {"linear": 313, "sparsity": 166, "gelu": 4091}


@dataclass
class Scale:
    preset: str
    games: int  # self-play training games
    eval_games: int
    nodes: int  # Stockfish nodes per White move
    steps: int
    up_steps: int
    batch_size: int
    sae_steps: int
    sae_width: int
    train: dict = field(default_factory=dict)  # other TrainConfig keys
    overrides: dict = field(default_factory=dict)  # per MLP preset: model overrides
    reduced: str = ""  # what this scale reduces, for the report


SCALES: dict[str, Scale] = {
    # CPU smoke scale: every row end to end in minutes; the numbers mean nothing.
    "tiny": Scale("tiny", games=300, eval_games=60, nodes=100, steps=40, up_steps=20, batch_size=8,
                  sae_steps=100, sae_width=512,
                  train=dict(lr=1e-3, min_lr=1e-4, warmup_steps=5, eval_interval=10**9, eval_batches=4,
                             log_interval=10),
                  overrides={"monet-hd": {"n_experts": 128}, "monet-vd": {"n_experts": 128},
                             "peer": {"n_experts": 64 * 64, "moe_heads": 8, "moe_top_k": 16,
                                      "d_key": 32}},
                  reduced="4-layer d128 backbone, 60 steps, batch 8: a pipeline check"),
    # One H100, about 20 minutes for all rows: the paper's shapes, fewer steps and games.
    "gpu-small": Scale("chess-8l", games=20_000, eval_games=500, nodes=2000, steps=1500, up_steps=750,
                       batch_size=32, sae_steps=3000, sae_width=4096,
                       train=dict(lr=6e-4, min_lr=6e-5, warmup_steps=150, eval_interval=750,
                                  eval_batches=10, log_interval=50, compile=True),
                       reduced="paper shapes (8 layers, d 512, ctx 1023); 1.5k + 0.75k steps of batch 32 "
                               "instead of 60k of batch 100; 20k self-play games instead of millions"),
    # The paper's configuration (multi-GPU: run under torchrun).
    "paper": Scale("chess-8l", games=200_000, eval_games=1000, nodes=2000, steps=30_000, up_steps=30_000,
                   batch_size=100, sae_steps=20_000, sae_width=4096,
                   train=dict(lr=3e-4, min_lr=3e-5, warmup_steps=2000, eval_interval=2000, eval_batches=20),
                   reduced="none (paper: 60k steps in all; split here 30k dense + 30k upcycled)"),
}


@dataclass
class Row:
    name: str
    mlp: str
    init: str  # scratch | upcycle | continue
    tables: tuple[str, ...]
    label: str


ROWS = [
    Row("gelu", "gelu", "scratch", ("table1", "table4"), "GELU"),
    Row("relu", "relu", "scratch", ("table1",), "ReLU"),
    Row("geglu", "geglu", "scratch", ("table1",), "GEGLU"),
    Row("solu", "solu", "scratch", ("table1",), "SoLU"),
    Row("monet-hd", "monet-hd", "scratch", ("table1",), "Monet-HD"),
    Row("monet-vd", "monet-vd", "scratch", ("table1",), "Monet-VD"),
    Row("peer", "peer", "scratch", ("table1",), "PEER"),
    Row("switch", "switch", "upcycle", ("table1", "table3"), "Switch (neither)"),
    Row("moex-gelu-sparsity", "moex-gelu-sparsity", "upcycle", ("table3",), "router only"),
    Row("moex-relu-linear", "moex-relu-linear", "upcycle", ("table3",), "ReLU only"),
    Row("moex", "moex", "upcycle", ("table1", "table3", "table4"), "MoE-X (both; upcycled)"),
    Row("dense-continued", "gelu", "continue", ("table4",), "dense continued"),
    Row("moex-scratch", "moex", "scratch", ("table4",), "MoE-X from scratch"),
]


def prepare_chess_data(out: Path, games: int, eval_games: int, ctx: int, nodes: int = 200, seed: int = 0,
                       engine: str = "auto", workers: int = 0,
                       games_dir: str | None = None) -> tuple[Path, Path, str]:
    """Self-play (or given) training games -> blocks, and held-out evaluation games. Reuses what exists.

    Returns (blocks directory, evaluation games.txt, the self-play engine)."""
    import os

    from ..data.chess.blocks import build_blocks
    from ..data.chess.selfplay import SelfPlayConfig, find_stockfish, generate_games

    workers = workers or len(os.sched_getaffinity(0))
    if engine == "auto":
        engine = "stockfish" if find_stockfish() else "random"
        if engine == "random":
            print("Stockfish not found (apt-get install stockfish): using the pure-Python random player")
    sp = SelfPlayConfig(engine=engine, nodes=nodes)
    train_games = Path(games_dir) if games_dir else out / "games" / "train"
    eval_dir = out / "games" / "eval"
    if not (train_games / "games.txt").exists():
        if games_dir:
            raise MoexError(f"{train_games / 'games.txt'} not found (moex data chess import ... --out {games_dir})")
        generate_games(games, train_games, sp, seed=seed, workers=workers)
    if not (eval_dir / "games.txt").exists():
        generate_games(eval_games, eval_dir, sp, seed=seed + 1, workers=workers)
    blocks = out / "blocks"
    if not (blocks / "meta.json").exists():
        build_blocks([train_games / "games.txt"], blocks, val_fraction=0.05, block=ctx + 1, seed=seed)
    return blocks, eval_dir / "games.txt", engine


def distributed() -> tuple[bool, Callable[[], None]]:
    """(is this the main process, a barrier): under torchrun every rank trains, only rank 0 writes
    data, initial weights and scores."""
    from ..train.trainer import setup_distributed

    rank, world, _ = setup_distributed()

    def barrier() -> None:
        if world > 1:
            torch.distributed.barrier()

    return rank == 0, barrier


def train_to(run: Path, steps: int, mcfg=None, tcfg: dict | None = None,
             init: Callable[[], Any] | None = None) -> None:
    """Train ``run`` until ``steps``: a new run from ``mcfg``, or from the weights ``init()`` returns (at
    step 0, fresh optimizer), or resume the run's newest checkpoint."""
    from ..io import save_model
    from ..train.checkpoint import latest_checkpoint, write_train_config
    from ..train.config import TrainConfig
    from ..train.trainer import train

    master, barrier = distributed()
    ck = latest_checkpoint(run)
    if ck is not None and ck.name.endswith(f"{steps:07d}"):
        return
    if ck is None and init is not None:
        if master and not (run / "model.safetensors").exists():
            save_model(init(), run)
            write_train_config(run, TrainConfig.from_dict({**(tcfg or {}), "max_steps": steps}))
        barrier()
    if ck is None and init is None:
        train(run, mcfg, TrainConfig.from_dict({**(tcfg or {}), "max_steps": steps}))
    else:
        train(run, resume=True, train_overrides={"max_steps": steps})


def last_val_loss(run: Path) -> float:
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    return next(r["val_loss"] for r in reversed(rows) if "val_loss" in r)


def score_model(model, games: list[str], layer: int, device: str, sae=None) -> dict[str, Any]:
    from ..interp.chess_eval import score_features
    from ..interp.collect import collect_chess

    acts = collect_chess(model, games, layer, device=device, sae=sae)
    score = score_features(games, acts.features, acts.f_max, device=device)
    return {"coverage": score["coverage"], "reconstruction": score["reconstruction"],
            "mean_l0": acts.mean_l0, "features": score["pieces"]["n_features"],
            "alive": score["pieces"]["alive_features"],
            "piece_state_coverage": score["piece_state"]["coverage"],
            "piece_state_reconstruction": score["piece_state"]["reconstruction"], "layer": layer}


@torch.no_grad()
def router_analysis(model, blocks_dir: Path, layer: int, device: str, n_blocks: int = 16) -> dict[str, Any]:
    """Gate logit vs counted l0 of every expert on evaluation tokens (Fig. 9), and the mean counted l0
    of the selected experts (appendix C), for the MoE at ``layer``."""
    from ..data.loader import BlockData

    data = BlockData(blocks_dir)
    x, _ = data.blocks("val", np.arange(min(n_blocks, data.n_blocks("val"))))
    model = model.to(device).eval()
    moe = model.h[layer].mlp
    h = model.mlp_input(x.to(device), layer).reshape(-1, model.cfg.d_model).float()
    logits = moe.router(h, moe.w_enc).float()  # (N, M)
    pre = torch.einsum("nd,mde->nme", h, moe.w_enc.float())
    l0 = (moe.act(pre) != 0).sum(-1).float()  # (N, M) counted active units per expert
    _, selected = logits.topk(moe.top_k, dim=-1)
    g, c = logits.flatten().cpu().numpy(), l0.flatten().cpu().numpy()
    r = float(np.corrcoef(g, c)[0, 1]) if g.std() > 0 and c.std() > 0 else float("nan")
    return {"router": model.cfg.router, "expert_act": model.cfg.expert_act, "tokens": int(h.shape[0]),
            "d_expert": moe.d_expert, "pearson_r_gate_vs_l0": r,
            "mean_l0_selected": float(l0.gather(1, selected).mean()), "mean_l0_all": float(l0.mean()),
            "sample_gate": g[:4000].tolist(), "sample_l0": c[:4000].tolist()}


def plot_router(analyses: dict[str, dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: router plot skipped (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, len(analyses), figsize=(5 * len(analyses), 4), squeeze=False)
    for ax, (name, a) in zip(axes[0], analyses.items()):
        ax.scatter(a["sample_gate"], a["sample_l0"], s=2, alpha=0.3)
        ax.set_xlabel(f"gate logit ({a['router']} router)")
        ax.set_ylabel("counted l0 of the expert")
        ax.set_title(f"{name}: r = {a['pearson_r_gate_vs_l0']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _fmt(v, digits=3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_tables(results: dict[str, Any]) -> dict[str, str]:
    rows = {r["name"]: r for r in results["rows"]}
    head = (f"scale {results['scale']} ({results['reduced']}); seed {results['seed']}; layer "
            f"{results['layer']}; {results['eval_games']} evaluation games. Paper numbers in brackets.\n")
    out = {}
    for table, title in (("table1", "Table 1"), ("table3", "Table 3 (ablation)"), ("table4", "Table 4")):
        lines = [f"# {title}\n", head, "| model | val loss | coverage | reconstruction | mean l0 | features |",
                 "|---|---|---|---|---|---|"]
        for row in ROWS:
            if table not in row.tables or row.name not in rows:
                continue
            r, p = rows[row.name], PAPER.get(row.name, (None, None, None))
            lines.append(
                f"| {row.label} | {_fmt(r['val_loss'], 4)} ({_fmt(p[0])}) | {_fmt(r['coverage'])} ({_fmt(p[1])}) | "
                f"{_fmt(r['reconstruction'])} ({_fmt(p[2])}) | {r['mean_l0']:.1f} | {r['features']} |")
        if table == "table1" and "sae" in rows:
            r = rows["sae"]
            lines.append(f"| SAE (post-res, {r['features']} latents) | {_fmt(r['val_loss'], 4)} | "
                         f"{_fmt(r['coverage'])} | {_fmt(r['reconstruction'])} | {r['mean_l0']:.1f} | "
                         f"{r['features']} |")
        out[table] = "\n".join(lines) + "\n"
    ra = results.get("router_analysis", {})
    if ra:
        lines = ["# Router analysis (Fig. 9, appendix C)\n", head,
                 "| model | router | experts | r(gate, l0) | mean l0 of selected experts | paper |",
                 "|---|---|---|---|---|---|"]
        for name, a in ra.items():
            paper = PAPER_L0["gelu"] if a["expert_act"] == "gelu" else PAPER_L0[a["router"]]
            lines.append(f"| {name} | {a['router']} | {a['expert_act']} x {a['d_expert']} | "
                         f"{_fmt(a['pearson_r_gate_vs_l0'])} | {a['mean_l0_selected']:.1f} | l0 {paper}"
                         + (", r < -0.95" if a["router"] == "sparsity" else "") + " |")
        out["router"] = "\n".join(lines) + "\n"
    return out


def run_chess_experiment(out: str | Path, scale: str = "tiny", seed: int = 0, engine: str = "auto",
                         device: str = "auto", workers: int = 0, games_dir: str | None = None,
                         only: list[str] | None = None) -> dict[str, Any]:
    from ..data.chess.importer import read_games
    from ..data.loader import BlockData
    from ..interp.collect import default_layer
    from ..interp.sae import SAE, SAEConfig, train_sae
    from ..io import load_model
    from ..model.config import make_config
    from ..model.upcycle import upcycle

    if scale not in SCALES:
        raise MoexError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    sc = SCALES[scale]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    master, barrier = distributed()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    ctx = make_config(sc.preset).ctx
    data_args = (out, sc.games, sc.eval_games, ctx, sc.nodes, seed, engine, workers, games_dir)
    if master:
        prepare_chess_data(*data_args)
    barrier()
    blocks, eval_path, engine = prepare_chess_data(*data_args)  # now only finds what rank 0 made
    eval_games = read_games(eval_path)
    tcfg = {**sc.train, "batch_size": sc.batch_size, "data": str(blocks), "seed": seed + 1337,
            "device": device, "ckpt_interval": max(10, min(sc.steps, sc.up_steps) // 2)}
    runs, rows_dir = out / "runs", out / "rows"
    if master:
        write_json(out / "experiment.json", {"scale": scale, "seed": seed, "engine": engine,
                                             "config": asdict(sc), "rows": [asdict(r) for r in ROWS]})
        rows_dir.mkdir(exist_ok=True)
    barrier()
    wanted = [r for r in ROWS if not only or r.name in only]
    dense_run = runs / "gelu"
    for row in wanted:
        done = rows_dir / f"{row.name}.json"
        if done.exists():
            continue
        run = runs / row.name
        mcfg = make_config(sc.preset, row.mlp, **sc.overrides.get(row.mlp, {}))
        if row.init == "scratch":
            steps = sc.steps + (sc.up_steps if row.name == "moex-scratch" else 0)
            train_to(run, steps, mcfg, tcfg)
        else:
            train_to(dense_run, sc.steps, make_config(sc.preset, "gelu"), tcfg)
            init = (lambda: load_model(dense_run)) if row.init == "continue" else \
                (lambda mlp=row.mlp: upcycle(load_model(dense_run), mlp, seed=seed))
            train_to(run, sc.up_steps, tcfg=tcfg, init=init)
        if master:
            model = load_model(run)
            layer = default_layer(model)
            write_json(done, {"name": row.name, "mlp": row.mlp, "init": row.init, "val_loss": last_val_loss(run),
                              **score_model(model, eval_games, layer, dev)})
        barrier()
    if (not only or "sae" in only) and not (rows_dir / "sae.json").exists():
        train_to(dense_run, sc.steps, make_config(sc.preset, "gelu"), tcfg)
        if master:
            dense = load_model(dense_run)
            layer = default_layer(dense)
            sae_dir = out / "sae"
            if (sae_dir / "cfg.json").exists():
                sae = SAE.load(sae_dir)
            else:
                cfg = SAEConfig(d_in=dense.cfg.d_model, d_sae=sc.sae_width, layer=layer)
                sae = train_sae(dense, BlockData(blocks), cfg, steps=sc.sae_steps, seed=seed, device=dev)
                sae.save(sae_dir)
            write_json(rows_dir / "sae.json", {"name": "sae", "mlp": "sae", "init": "dense gelu", "val_loss": None,
                                               **score_model(dense, eval_games, layer, dev, sae=sae.cpu())})
        barrier()
    if not master:
        return {}
    return report(out, sc, scale, seed, dev, len(eval_games), blocks, time.time() - t0)


def report(out: Path, sc: Scale, scale: str, seed: int, dev: str, n_eval: int, blocks: Path,
           seconds: float) -> dict[str, Any]:
    """Router analysis of the finished MoE rows, then ``results.json``, the tables and the plot."""
    from ..interp.collect import default_layer
    from ..io import load_model

    runs, rows_dir = out / "runs", out / "rows"
    analyses = {}
    for name in ("moex", "moex-relu-linear", "moex-gelu-sparsity", "switch"):
        if (rows_dir / f"{name}.json").exists():
            model = load_model(runs / name)
            analyses[name] = router_analysis(model, blocks, default_layer(model), dev)
    rows = [json.loads((rows_dir / f"{r}.json").read_text()) for r in [x.name for x in ROWS] + ["sae"]
            if (rows_dir / f"{r}.json").exists()]
    results = {"scale": scale, "reduced": sc.reduced, "seed": seed, "eval_games": n_eval,
               "layer": rows[0]["layer"] if rows else None, "device": dev,
               "gpu": torch.cuda.get_device_name() if dev == "cuda" else None, "torch": torch.__version__,
               "rows": rows, "paper": PAPER,
               "router_analysis": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("sample_")}
                                   for k, v in analyses.items()},
               "seconds_this_invocation": round(seconds, 1)}
    write_json(out / "results.json", results)
    for name, text in format_tables(results).items():
        (out / f"{name}.md").write_text(text)
    if analyses:
        plot_router(analyses, out / "router.png")
    for name in ("table1", "table3", "table4", "router"):
        if (out / f"{name}.md").exists():
            print((out / f"{name}.md").read_text())
    return results


def cmd_experiment_chess(args) -> None:
    if args.fresh and Path(args.out).exists():
        shutil.rmtree(Path(args.out) / "rows", ignore_errors=True)
    run_chess_experiment(args.out, scale=args.scale, seed=args.seed, engine=args.engine, device=args.device,
                         workers=args.workers, games_dir=args.games, only=args.only)


def add_experiment_commands(sub) -> None:
    p = sub.add_parser("experiment", help="reproduce the papers' experiments")
    esub = p.add_subparsers(dest="experiment_cmd", required=True)
    s = esub.add_parser("chess", help="Tables 1, 3, 4 + SAE row + router analysis on chess")
    s.add_argument("--scale", choices=list(SCALES), default="tiny")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--engine", choices=["auto", "stockfish", "random"], default="auto")
    s.add_argument("--games", help="use this directory's games.txt (moex data chess import) for training")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=0)
    s.add_argument("--only", nargs="+", help="rows to run now (others are kept or left for later)")
    s.add_argument("--fresh", action="store_true", help="re-score every row (trained runs are kept)")
    s.set_defaults(func=cmd_experiment_chess)
