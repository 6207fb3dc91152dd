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
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..artifacts import MODEL_WEIGHTS, write_json
from ..config import Config, ConfigError
from ..data.chess.blocks import build_blocks
from ..data.chess.importer import read_games
from ..data.chess.selfplay import SelfPlayConfig, generate_games
from ..data.chess.transcript import distinct_openings
from ..data.loader import BlockData
from ..errors import Interrupted, MoexError
from ..eval.chess_competence import ChessEvalConfig, evaluate_chess, headline
from ..interp.chess_eval import score_chess
from ..interp.sae import SAE, SAEConfig, train_sae
from ..interp.sites import SAESite, default_layer
from ..model.config import make_config
from ..model.gpt import GPT
from ..model.upcycle import upcycle
from ..plotting import pyplot, save_figure
from ..training.checkpoint import latest_checkpoint, start_run
from ..training.config import TrainConfig
from ..training.trainer import setup_distributed, train

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


@dataclass
class Scale(Config):
    """How big an experiment is: backbone, data, steps. Named scales in ``SCALES``; any key can be
    overridden (``moex experiment chess --scale tiny steps=100``)."""

    label: ClassVar[str] = "scale"

    preset: str = "tiny"
    games: int = 300  # self-play training games
    eval_games: int = 60
    nodes: int = 100  # Stockfish nodes per White move
    random_plies: int = 2  # self-play games open with this many uniformly random plies (varied openings)
    steps: int = 40
    up_steps: int = 20
    batch_size: int = 8
    sae_steps: int = 100
    sae_width: int = 512
    prefixes: int = 1000  # held-out prefixes for each row's legal-move rate
    train: dict = field(default_factory=dict)  # other TrainConfig keys
    overrides: dict = field(default_factory=dict)  # per MLP preset: model overrides
    rows: list = field(default_factory=list)  # rows run by default (empty: every row and the SAE)
    reduced: str = ""  # what this scale reduces, for the report

    def validate(self) -> None:
        TrainConfig.from_dict(self.train, source="scale key 'train'")
        for key, low in (("games", 1), ("eval_games", 2), ("nodes", 1), ("steps", 1), ("up_steps", 1),
                         ("batch_size", 1), ("sae_steps", 0), ("sae_width", 0), ("prefixes", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"{key}={getattr(self, key)} must be at least {low}")
        unknown = sorted(set(self.rows) - {r.name for r in ROWS} - {"sae"})
        if unknown:
            raise ConfigError(f"scale key 'rows': unknown row(s) {', '.join(unknown)}; rows: "
                              f"{', '.join(r.name for r in ROWS)}, sae")


SCALES: dict[str, Scale] = {
    # The demo: dense GELU, then Switch and MoE-X upcycled from it, on a 2-core CPU in minutes.
    "demo": Scale("tiny", games=800, eval_games=200, nodes=200, steps=150, up_steps=100, batch_size=16,
                  sae_steps=0, sae_width=0, prefixes=500, rows=["gelu", "switch", "moex"],
                  train=dict(lr=1e-3, min_lr=1e-4, warmup_steps=20, eval_interval=10**9, eval_batches=4,
                             log_interval=5),
                  reduced="4-layer d128 backbone, 150 + 100 steps of batch 16: a smoke test, not the paper"),
    # CPU smoke scale: every row end to end in minutes; the numbers mean nothing.
    "tiny": Scale("tiny", games=300, eval_games=60, nodes=100, steps=40, up_steps=20, batch_size=8,
                  sae_steps=100, sae_width=512, prefixes=100,
                  train=dict(lr=1e-3, min_lr=1e-4, warmup_steps=5, eval_interval=10**9, eval_batches=4,
                             log_interval=10),
                  overrides={"monet-hd": {"n_experts": 128}, "monet-vd": {"n_experts": 128},
                             "peer": {"n_experts": 64 * 64, "moe_heads": 8, "moe_top_k": 16,
                                      "d_key": 32}},
                  reduced="4-layer d128 backbone, 60 steps, batch 8: a pipeline check"),
    # The 2-core CPU scale: the Table-1 core rows on models that learn, within 150 minutes on one thread. Shape
    # from the sweep in results/chess/cpu (legal-move rate per CPU-minute); meant for imported master games
    # (--games DIR --eval-games FILE); without them it plays `games` Stockfish games first.
    "cpu": Scale("tiny", games=5000, eval_games=400, nodes=200, steps=1500, up_steps=500, batch_size=16,
                 sae_steps=2000, sae_width=1024, prefixes=1000,
                 rows=["gelu", "switch", "moex", "dense-continued", "moex-scratch"],
                 # compiled: MoE-X's CPU step 1.4x faster (benchmarks/results/train_step_cpu_scale.json)
                 train=dict(lr=1e-3, min_lr=1e-4, warmup_steps=100, eval_interval=250, eval_batches=20,
                            log_interval=25, compile=True),
                 reduced="4-layer d128 backbone, ctx 255, 1.5k + 0.5k steps of batch 16 (6.1M + 2.0M tokens) "
                         "instead of 8 layers, d 512, ctx 1023 and 60k steps of batch 100"),
    # One H200 device call of at most 5 minutes per group of rows (benchmarks/gpu/part_b.sh): the paper's
    # shapes, few steps, no compile (one compile per row would eat the call). Sized by estimate (about
    # 60 ms a step at batch 32 x 1023); resize from part A's measured step times.
    "gpu-budget": Scale("chess-8l", games=3000, eval_games=200, nodes=200, steps=300, up_steps=150, batch_size=32,
                        sae_steps=500, sae_width=4096,
                        train=dict(lr=6e-4, min_lr=6e-5, warmup_steps=30, eval_interval=10**9, eval_batches=4,
                                   log_interval=25),
                        reduced="paper shapes (8 layers, d 512, ctx 1023); 300 + 150 steps of batch 32 instead of "
                                "60k of batch 100; 3,000 Stockfish games (200 nodes) instead of millions"),
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


def prepare_chess_data(out: Path, games: int, eval_games: int, ctx: int, nodes: int = 200, seed: int = 0,
                       engine: str = "auto", workers: int = 0, games_dir: str | None = None,
                       eval_file: str | None = None,
                       random_plies: int = Scale.random_plies) -> tuple[Path, Path, str]:
    """Self-play (or given: ``games_dir``'s games.txt) training games -> blocks, and held-out evaluation games
    (self-play, or ``eval_file``: a games.txt none of whose games is a training game). Reuses what exists.

    Returns (blocks directory, evaluation games.txt, the self-play engine)."""
    workers = workers or len(os.sched_getaffinity(0))
    sp = SelfPlayConfig(engine=engine, nodes=nodes, random_plies=random_plies)
    train_games = Path(games_dir) if games_dir else out / "games" / "train"
    eval_dir = out / "games" / "eval"
    if eval_file:
        check_held_out(Path(eval_file), train_games / "games.txt")
    if not (train_games / "games.txt").exists() or not (eval_file or (eval_dir / "games.txt").exists()):
        sp = sp.resolved()
    if not (train_games / "games.txt").exists():
        if games_dir:
            raise MoexError(f"{train_games / 'games.txt'} not found (moex data chess import ... --out {games_dir})")
        generate_games(games, train_games, sp, seed=seed, workers=workers)
    if not eval_file and not (eval_dir / "games.txt").exists():
        generate_games(eval_games, eval_dir, sp, seed=seed + 1, workers=workers)
    blocks = out / "blocks"
    if not (blocks / "meta.json").exists():
        build_blocks([train_games / "games.txt"], blocks, val_fraction=0.05, block=ctx + 1, seed=seed)
    return blocks, Path(eval_file) if eval_file else eval_dir / "games.txt", sp.engine


def check_held_out(eval_file: Path, train_file: Path) -> None:
    """``eval_file`` is a readable games.txt and none of its games is in ``train_file`` (when that exists)."""
    held_out = set(read_games(eval_file))
    if train_file.exists():
        seen = held_out.intersection(read_games(train_file))
        if seen:
            raise MoexError(f"{eval_file}: {len(seen)} of its {len(held_out)} games are also training games "
                            f"({train_file}); evaluation games must be held out")


def distributed() -> tuple[bool, Callable[[], None]]:
    """(is this the main process, a barrier): under torchrun every rank trains, only rank 0 writes
    data, initial weights and scores."""
    rank, world, _ = setup_distributed()

    def barrier() -> None:
        if world > 1:
            torch.distributed.barrier()

    return rank == 0, barrier


def train_to(run: Path, steps: int, mcfg=None, tcfg: dict | None = None,
             init: Callable[[], GPT] | None = None) -> None:
    """Train ``run`` until ``steps``: a new run from ``mcfg``, or from the weights ``init()`` returns (at
    step 0, fresh optimizer: ``start_run``), or resume the run's newest checkpoint."""
    master, barrier = distributed()
    ck = latest_checkpoint(run)
    if ck is not None and ck.name.endswith(f"{steps:07d}"):
        return
    tc = TrainConfig.from_dict({**(tcfg or {}), "max_steps": steps}, source=f"{run}: train settings")
    if ck is None and init is not None:
        if master and not (run / MODEL_WEIGHTS).exists():
            start_run(run, init(), tc)
        barrier()
    if ck is None and init is None:
        train(run, mcfg, tc)
    else:
        train(run, resume=True, train_overrides={"max_steps": steps})


def last_val_loss(run: Path) -> float:
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    return next(r["val_loss"] for r in reversed(rows) if "val_loss" in r)


ROW_KEYS = ("coverage", "reconstruction", "coverage_per_bsp", "reconstruction_per_board", "mean_l0", "features",
            "alive", "layer", "fmax_split")


def score_row(model: GPT, games: list[str], device: str, sae: SAE | None = None,
              layer: int | None = None, prefixes: int = 1000) -> dict[str, Any]:
    """A table row's scores: the MLP code (or ``sae``'s latents) at ``layer`` (default: the evaluated one),
    and, unless ``prefixes`` is 0, how well the model plays (legal-move rate on ``prefixes`` held-out
    prefixes, best layer's board-probe accuracy: ``headline``)."""
    site = SAESite(model, sae) if sae is not None else "mlp"
    s = score_chess(model, games, default_layer(model) if layer is None else layer, site, device=device)
    competence = headline(evaluate_chess(model, games, ChessEvalConfig(prefixes=prefixes), device=device,
                                         progress=False)) if prefixes else {}
    return {**{k: s[k] for k in ROW_KEYS}, "piece_state_coverage": s["piece_state"]["coverage"],
            "piece_state_reconstruction": s["piece_state"]["reconstruction"], **competence}


@torch.no_grad()
def router_analysis(model: GPT, blocks_dir: Path, layer: int, device: str, n_blocks: int = 16) -> dict[str, Any]:
    """Gate logit vs counted l0 of every expert on validation tokens (Fig. 9), and the mean counted l0 of
    the selected experts (appendix C), for the MoE at ``layer`` (``MoE.router_analysis``)."""
    data = BlockData(blocks_dir)
    x, _ = data.blocks("val", np.arange(min(n_blocks, data.n_blocks("val"))))
    model = model.to(device).eval()
    h = model.mlp_input(x.to(device), layer).reshape(-1, model.cfg.d_model).float()
    return model.h[layer].mlp.router_analysis(h)


def plot_router(analyses: dict[str, dict], path: Path) -> bool:
    plt = pyplot("router plot")
    if plt is None:
        return False
    fig, axes = plt.subplots(1, len(analyses), figsize=(5 * len(analyses), 4), squeeze=False)
    for ax, (name, a) in zip(axes[0], analyses.items()):
        ax.scatter(a["sample_gate"], a["sample_l0"], s=2, alpha=0.3)
        ax.set_xlabel(f"gate logit ({a['router']} router)")
        ax.set_ylabel("counted l0 of the expert")
        r = a["pearson_r_gate_vs_l0"]
        ax.set_title(f"{name}: r = {r:.3f}" if r == r else
                     f"{name}: no r (every expert's l0 is {a['sample_l0'][0]:.0f}:\n{a['expert_act']} experts are dense)",
                     fontsize=10)
    save_figure(fig, path)
    return True


def _fmt(v, digits=3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def competence_cells(row: dict[str, Any]) -> str:
    """"legal moves | board probe" cells: greedy legal-move rate; best layer's 13-class probe accuracy."""
    legal = "-" if row.get("legal_move_rate") is None else f"{100 * row['legal_move_rate']:.1f}%"
    probe = "-" if row.get("probe_accuracy") is None else f"{row['probe_accuracy']:.3f} (L{row['probe_layer']})"
    return f"{legal} | {probe}"


COMPETENCE_NOTE = ("Legal moves: share of greedy next moves that are legal after held-out game prefixes (random "
                   "characters: {chance}). Board probe: test accuracy of linear probes of the 13-class state of each "
                   "square from the residual stream, best layer (trivial baseline {base}; the same per move "
                   "number {move}).\n")


ROW_NOTES = {  # what each row is; a table's note names only the rows it prints
    "gelu": "GELU = the dense model",
    "switch": "Switch (neither) = linear top-k router, GELU experts",
    "moex-gelu-sparsity": "router only = the sparsity router with GELU experts",
    "moex-relu-linear": "ReLU only = ReLU experts with the linear router",
    "moex": "MoE-X (both) = sparsity router, ReLU experts",
    "dense-continued": "dense continued = the dense model trained up_steps more",
    "moex-scratch": "MoE-X from scratch = MoE-X trained steps + up_steps from random weights",
}


def rows_note(chosen: list[Row]) -> str:
    """The note under a table: what its rows are and how each was trained."""
    named = [ROW_NOTES[r.name] for r in chosen if r.name in ROW_NOTES]
    upcycled = [r.label.split(" (")[0] for r in chosen if r.init == "upcycle"]
    note = "Rows: " + "; ".join(named) + "." if named else ""
    if upcycled:
        names = ", ".join(upcycled[:-1]) + " and " + upcycled[-1] if len(upcycled) > 1 else upcycled[0]
        note += f" {names} {'is' if len(upcycled) == 1 else 'are'} upcycled from the dense GELU model."
    if any(r.init == "scratch" and r.name not in ("gelu", "moex-scratch") for r in chosen):
        note += " The other rows are trained from scratch."
    return note.strip()


def preamble(results: dict[str, Any]) -> str:
    """What every table shares: the scale, the layer, the definitions of the columns."""
    head = (f"Scale {results['scale']} ({results['reduced']}); seed {results['seed']}; layer {results['layer']}; "
            f"{results['eval_games']} held-out evaluation games"
            + (f"; the training games open in {results['train_openings']} different ways (first two plies)"
               if results.get("train_openings") else "") + ". Coverage and reconstruction as Karvonen's code "
            "computes them (one threshold for all BSPs; F1 pooled over boards); B.2 / B.3: the paper appendix's "
            "definitions as written (a threshold per BSP; the mean per-board F1). f_max over the train half of the "
            "games.\n")
    first = next((r for r in results["rows"] if r.get("legal_move_rate") is not None), None)
    if first is not None:
        head += COMPETENCE_NOTE.format(chance=f"{100 * first['legal_move_rate_chance']:.1f}%",
                                       base=_fmt(first.get("probe_baseline")), move=_fmt(first.get("probe_move_baseline")))
    return head


def table_bodies(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """(title, Markdown body) of each table: ours, then the paper's numbers for the same rows."""
    rows = {r["name"]: r for r in results["rows"]}
    out = {}
    for table, title in (("table1", "Table 1"), ("table3", "Table 3 (ablation)"), ("table4", "Table 4")):
        chosen = [row for row in ROWS if table in row.tables and row.name in rows]
        if not chosen:
            continue
        lines = ["| model | val loss | legal moves | board probe | coverage | reconstruction | coverage (B.2) | "
                 "reconstruction (B.3) | mean l0 | features |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in chosen:
            r = rows[row.name]
            lines.append(f"| {row.label} | {_fmt(r['val_loss'], 4)} | {competence_cells(r)} | {_fmt(r['coverage'])} | "
                         f"{_fmt(r['reconstruction'])} | {_fmt(r.get('coverage_per_bsp'))} | "
                         f"{_fmt(r.get('reconstruction_per_board'))} | {r['mean_l0']:.1f} | {r['features']} |")
        if table == "table1" and "sae" in rows:
            r = rows["sae"]
            lines.append(f"| SAE (post-res, {r['features']} latents) | {_fmt(r['val_loss'], 4)} | "
                         f"{competence_cells(r)} | {_fmt(r['coverage'])} | {_fmt(r['reconstruction'])} | "
                         f"{_fmt(r.get('coverage_per_bsp'))} | {_fmt(r.get('reconstruction_per_board'))} | "
                         f"{r['mean_l0']:.1f} | {r['features']} |")
        lines += ["", rows_note(chosen)]
        lines += ["", f"The paper's {title.split(' (')[0]} for the same rows (8 layers, d 512, 60k steps of batch 100 on "
                      "millions of games; not comparable in scale):", "",
                  "| model | val loss | coverage | reconstruction |", "|---|---|---|---|"]
        for row in chosen:
            p = PAPER.get(row.name, (None, None, None))
            lines.append(f"| {row.label} | {_fmt(p[0])} | {_fmt(p[1])} | {_fmt(p[2])} |")
        out[table] = (title, "\n".join(lines) + "\n")
    ra = results.get("router_analysis", {})
    if ra:
        lines = ["| model | router | experts | r(gate, l0) | mean l0 of selected experts | paper |",
                 "|---|---|---|---|---|---|"]
        for name, a in ra.items():
            paper = PAPER_L0["gelu"] if a["expert_act"] == "gelu" else PAPER_L0[a["router"]]
            r = a["pearson_r_gate_vs_l0"]
            lines.append(f"| {name} | {a['router']} | {a['expert_act']} x {a['d_expert']} | "
                         f"{_fmt(r) if r == r else 'none (every expert dense)'} | {a['mean_l0_selected']:.1f} | l0 {paper}"
                         + (", r < -0.95" if a["router"] == "sparsity" else "") + " |")
        out["router"] = ("Router analysis (Fig. 9, appendix C)", "\n".join(lines) + "\n")
    return out


def format_tables(results: dict[str, Any]) -> dict[str, str]:
    """Each table as a file that stands alone: title, preamble, our numbers, the paper's."""
    head = preamble(results)
    return {name: f"# {title}\n\n{head}\n{body}" for name, (title, body) in table_bodies(results).items()}


def scale_config(scale: str | Scale = "tiny", **overrides: Any) -> Scale:
    """A named scale (``SCALES``) with ``overrides`` applied and checked, or a ``Scale`` as given."""
    if isinstance(scale, Scale):
        return scale.replace("scale settings", **overrides) if overrides else scale
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return SCALES[scale].replace(f"scale {scale!r}", **overrides)


@dataclass
class ExperimentSetup:
    """What every chess experiment and study starts from: the scale, the data, the train settings."""

    scale: Scale
    name: str  # the scale's name ("custom" for a Scale object)
    out: Path
    blocks: Path
    eval_games: list[str]
    engine: str
    tcfg: dict  # train settings of every run (each run adds max_steps)
    device: str
    master: bool
    barrier: Callable[[], None]
    openings: int  # distinct first two plies of the training games


def setup_experiment(out: str | Path, scale: str | Scale = "tiny", seed: int = 0, engine: str = "auto",
                     device: str = "auto", workers: int = 0, games_dir: str | None = None,
                     settings: dict[str, Any] | None = None, eval_file: str | None = None) -> ExperimentSetup:
    """Resolve the scale, make (or find) the games and blocks (rank 0 only under torchrun), and derive the
    train settings shared by every run."""
    sc = scale_config(scale, **(settings or {}))
    # every setting is checked before any game is played or step trained
    TrainConfig.from_dict({**sc.train, "batch_size": sc.batch_size, "device": device}, source="experiment settings")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but CUDA is not available (use --device cpu or auto)")
    if engine not in ("auto", "stockfish", "random"):
        raise ConfigError(f"engine={engine!r} must be auto, stockfish or random")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    master, barrier = distributed()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    data_args = (out, sc.games, sc.eval_games, make_config(sc.preset).ctx, sc.nodes, seed, engine, workers, games_dir,
                 eval_file, sc.random_plies)
    if master:
        prepare_chess_data(*data_args)
    barrier()
    blocks, eval_path, engine = prepare_chess_data(*data_args)  # now only finds what rank 0 made
    tcfg = {**sc.train, "batch_size": sc.batch_size, "data": str(blocks), "seed": seed + 1337,
            "device": device, "ckpt_interval": max(10, min(sc.steps, sc.up_steps) // 2)}
    train_file = (Path(games_dir) if games_dir else out / "games" / "train") / "games.txt"
    return ExperimentSetup(sc, scale if isinstance(scale, str) else "custom", out, blocks,
                           read_games(eval_path)[:sc.eval_games],
                           engine, tcfg, dev, master, barrier, distinct_openings(read_games(train_file)))


def run_chess_experiment(out: str | Path, scale: str | Scale = "tiny", seed: int = 0, engine: str = "auto",
                         device: str = "auto", workers: int = 0, games_dir: str | None = None,
                         only: list[str] | None = None, fresh: bool = False,
                         settings: dict[str, Any] | None = None, eval_file: str | None = None) -> dict[str, Any]:
    """Train (or reuse) and score the rows of ``scale`` (a name in ``SCALES`` with ``settings`` applied,
    or a ``Scale``), then write the tables. ``only``: these rows now; ``fresh``: score every row again
    (trained runs are kept); ``games_dir``/``eval_file``: given training/held-out games instead of
    self-play (the first ``eval_games`` of ``eval_file`` are used)."""
    t0 = time.time()
    unknown = sorted(set(only or []) - {r.name for r in ROWS} - {"sae"})
    if unknown:
        raise ConfigError(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(r.name for r in ROWS)}, sae")
    setup = setup_experiment(out, scale, seed, engine, device, workers, games_dir, settings, eval_file)
    sc, name, out, master, barrier = setup.scale, setup.name, setup.out, setup.master, setup.barrier
    blocks, eval_games, engine, dev = setup.blocks, setup.eval_games, setup.engine, setup.device
    wanted_names = list(only or sc.rows or [r.name for r in ROWS] + ["sae"])
    if fresh:
        shutil.rmtree(out / "rows", ignore_errors=True)
    rows_dir = out / "rows"
    if master:
        write_json(out / "experiment.json", {"scale": name, "seed": seed, "engine": engine, "eval_file": eval_file,
                                             "config": asdict(sc), "rows": [asdict(r) for r in ROWS]})
        rows_dir.mkdir(exist_ok=True)
    barrier()
    try:
        rows_and_sae(setup, wanted_names, seed)
    except Interrupted as e:
        raise Interrupted(f"{e.where} (row runs under {out / 'runs'}; finished rows are kept)",
                          "the same command again") from None
    if not master:
        return {}
    return report(out, sc, name, seed, dev, len(eval_games), blocks, time.time() - t0, setup.openings)


def rows_and_sae(setup: ExperimentSetup, wanted_names: list[str], seed: int) -> None:
    """Train (or reuse) and score each wanted row, then the SAE row; a finished row is skipped."""
    sc, out, master, barrier = setup.scale, setup.out, setup.master, setup.barrier
    blocks, eval_games, tcfg, dev = setup.blocks, setup.eval_games, setup.tcfg, setup.device
    runs, rows_dir = out / "runs", out / "rows"
    dense_run = runs / "gelu"
    for row in [r for r in ROWS if r.name in wanted_names]:
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
            init = (lambda: GPT.from_pretrained(dense_run)) if row.init == "continue" else \
                (lambda mlp=row.mlp: upcycle(GPT.from_pretrained(dense_run), mlp, seed=seed))
            train_to(run, sc.up_steps, tcfg=tcfg, init=init)
        if master:
            write_json(done, {"name": row.name, "mlp": row.mlp, "init": row.init, "val_loss": last_val_loss(run),
                              **score_row(GPT.from_pretrained(run), eval_games, dev, prefixes=sc.prefixes)})
        barrier()
    if "sae" in wanted_names and not (rows_dir / "sae.json").exists():
        train_to(dense_run, sc.steps, make_config(sc.preset, "gelu"), tcfg)
        if master:
            dense = GPT.from_pretrained(dense_run)
            sae_dir = out / "sae"
            if (sae_dir / "cfg.json").exists():
                sae = SAE.load(sae_dir)
            else:
                cfg = SAEConfig(d_in=dense.cfg.d_model, d_sae=sc.sae_width, layer=default_layer(dense),
                                steps=sc.sae_steps, seed=seed)
                sae = train_sae(dense, BlockData(blocks), cfg, device=dev)
                sae.save(sae_dir)
            write_json(rows_dir / "sae.json", {"name": "sae", "mlp": "sae", "init": "dense gelu", "val_loss": None,
                                               **score_row(dense, eval_games, dev, sae=sae.cpu(), prefixes=0)})
        barrier()


def run_demo(out: str | Path = "moex-demo", seed: int = 0, engine: str = "auto", device: str = "auto",
             workers: int = 0, **overrides: Any) -> dict[str, Any]:
    """``moex demo``: the ``demo`` scale of the chess experiment (dense GELU, Switch and MoE-X upcycled
    from it), with ``overrides`` of its scale keys (e.g. ``steps=300``)."""
    results = run_chess_experiment(out, "demo", seed=seed, engine=engine, device=device, workers=workers,
                                   settings=overrides)
    print(DEMO_SPREAD)
    return results


# Measured over seeds 0, 1, 2 of the demo (results/demo/spread.md in the repository; tests/test_results.py checks
# these numbers against the committed runs).
DEMO_SPREAD = ("From seed to seed (--seed: other games, other initial weights) these numbers move: over seeds 0-2 "
               "the greedy legal-move rate of each row varied by up to 7.0 points and coverage by up to 0.014, so "
               "differences of that size between rows say nothing.")


def report(out: Path, sc: Scale, scale: str, seed: int, dev: str, n_eval: int, blocks: Path,
           seconds: float, openings: int | None = None) -> dict[str, Any]:
    """Router analysis of the finished MoE rows, then ``results.json``, the tables and the plot."""
    runs, rows_dir = out / "runs", out / "rows"
    analyses = {}
    for name in ("moex", "moex-relu-linear", "moex-gelu-sparsity", "switch"):
        if (rows_dir / f"{name}.json").exists():
            model = GPT.from_pretrained(runs / name)
            analyses[name] = router_analysis(model, blocks, default_layer(model), dev)
    rows = [json.loads((rows_dir / f"{r}.json").read_text()) for r in [x.name for x in ROWS] + ["sae"]
            if (rows_dir / f"{r}.json").exists()]
    results = {"scale": scale, "reduced": sc.reduced, "seed": seed, "eval_games": n_eval, "train_openings": openings,
               "layer": rows[0]["layer"] if rows else None, "device": dev,
               "gpu": torch.cuda.get_device_name() if dev == "cuda" else None, "torch": torch.__version__,
               "rows": rows, "paper": PAPER,
               "router_analysis": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("sample_")}
                                   for k, v in analyses.items()},
               "seconds_this_invocation": round(seconds, 1)}
    write_json(out / "results.json", results)
    written = [out / "results.json"]
    for name, text in format_tables(results).items():
        (out / f"{name}.md").write_text(text)
        written.append(out / f"{name}.md")
    if analyses and plot_router(analyses, out / "router.png"):
        written.append(out / "router.png")
    print(preamble(results))
    for title, body in table_bodies(results).values():
        print(f"# {title}\n\n{body}")
    print("wrote " + ", ".join(map(str, written)))
    return results
