"""``moex demo``: chess data -> dense GELU, Switch and MoE-X models -> a Table-1-style comparison.

Sized for a 2-core CPU in about 10 minutes; ``--steps`` / ``--games`` / ``--preset`` scale it up on a GPU.
Finished steps are reused when run again with the same --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROWS = (("GELU (dense)", "gelu"), ("Switch", "switch"), ("MoE-X", "moex"))


def run_demo(out: Path, games: int = 800, eval_games: int = 200, steps: int = 150, preset: str = "tiny",
             engine: str = "auto", seed: int = 0, workers: int = 0, device: str = "auto") -> dict[str, Any]:
    import os

    import torch

    from .data.chess.blocks import build_blocks
    from .data.chess.importer import read_games
    from .data.chess.selfplay import SelfPlayConfig, find_stockfish, generate_games
    from .interp.chess_eval import score_features
    from .interp.collect import collect_chess, default_layer
    from .io import load_model, write_json
    from .model.config import make_config
    from .train.checkpoint import latest_checkpoint
    from .train.config import TRAIN_PRESETS, TrainConfig
    from .train.trainer import train

    t_start = time.time()
    workers = workers or len(os.sched_getaffinity(0))
    if engine == "auto":
        engine = "stockfish" if find_stockfish() else "random"
        if engine == "random":
            print("Stockfish not found (apt-get install stockfish): using the pure-Python random player")
    sp = SelfPlayConfig(engine=engine, nodes=200)
    data_games, eval_path = out / "games" / "train", out / "games" / "eval"
    if not (data_games / "games.txt").exists():
        generate_games(games, data_games, sp, seed=seed, workers=workers)
    if not (eval_path / "games.txt").exists():
        generate_games(eval_games, eval_path, sp, seed=seed + 1, workers=workers)
    mcfg0 = make_config(preset)
    blocks = out / "blocks"
    if not (blocks / "meta.json").exists():
        build_blocks([data_games / "games.txt"], blocks, val_fraction=0.05, block=mcfg0.ctx + 1, seed=seed)
    eval_games_list = read_games(eval_path / "games.txt")

    results: dict[str, Any] = {"preset": preset, "engine": engine, "games": games, "eval_games": eval_games,
                               "steps": steps, "seed": seed, "rows": []}
    for name, mlp in ROWS:
        run = out / "runs" / mlp
        ck = latest_checkpoint(run)
        if ck is None or not ck.name.endswith(f"{steps:07d}"):
            tcfg = TrainConfig.from_dict({**TRAIN_PRESETS.get(preset, {}), "max_steps": steps,
                                          "eval_interval": steps, "ckpt_interval": steps, "data": str(blocks),
                                          "seed": seed + 1337, "device": device})
            if ck is None:
                train(run, make_config(preset, mlp), tcfg)
            else:
                train(run, resume=True, train_overrides={"max_steps": steps})
        metrics = [json.loads(line) for line in open(run / "metrics.jsonl")]
        val_loss = next(r["val_loss"] for r in reversed(metrics) if "val_loss" in r)
        model = load_model(run)
        layer = default_layer(model)
        dev = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        acts = collect_chess(model, eval_games_list, layer, device=dev)
        score = score_features(eval_games_list, acts.features, acts.f_max, device=dev)
        row = {"model": name, "mlp": mlp, "val_loss": val_loss, "coverage": score["coverage"],
               "reconstruction": score["reconstruction"], "mean_l0": acts.mean_l0, "layer": layer,
               "features": score["pieces"]["n_features"], "alive": score["pieces"]["alive_features"],
               "piece_state_coverage": score["piece_state"]["coverage"],
               "piece_state_reconstruction": score["piece_state"]["reconstruction"]}
        results["rows"].append(row)
        write_json(out / "scores" / f"{mlp}.json", {**score, "layer": layer, "mean_l0": acts.mean_l0})
    results["seconds"] = round(time.time() - t_start, 1)
    table = format_table(results)
    write_json(out / "results.json", results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return results


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"moex demo: preset {results['preset']}, {results['games']} {results['engine']} games, "
        f"{results['steps']} steps, layer {results['rows'][0]['layer']} MLP code, "
        f"{results['eval_games']} evaluation games (half label features, half score)",
        "",
        "| model | val loss | coverage | reconstruction | mean l0 | features (alive) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['model']} | {r['val_loss']:.4f} | {r['coverage']:.3f} | {r['reconstruction']:.3f} | "
                     f"{r['mean_l0']:.1f} | {r['features']} ({r['alive']}) |")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> None:
    run_demo(Path(args.out), games=args.games, eval_games=args.eval_games, steps=args.steps, preset=args.preset,
             engine=args.engine, seed=args.seed, workers=args.workers, device=args.device)


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="small end-to-end run: data, three models, Table-1-style comparison")
    p.add_argument("--out", default="moex-demo")
    p.add_argument("--games", type=int, default=800, help="self-play games for training")
    p.add_argument("--eval-games", type=int, default=200)
    p.add_argument("--steps", type=int, default=150, help="training steps per model")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--engine", choices=["auto", "stockfish", "random"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)
