"""``moex demo``: chess data -> dense GELU, Switch and MoE-X models -> a Table-1-style comparison.

Sized for a 2-core CPU in about 10 minutes; ``--steps`` / ``--games`` / ``--preset`` scale it up on a GPU.
Finished steps are reused when run again with the same --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

ROWS = (("GELU (dense)", "gelu"), ("Switch", "switch"), ("MoE-X", "moex"))


def run_demo(out: Path, games: int = 800, eval_games: int = 200, steps: int = 150, preset: str = "tiny",
             engine: str = "auto", seed: int = 0, workers: int = 0, device: str = "auto") -> dict[str, Any]:
    import torch

    from .data.chess.importer import read_games
    from .experiments.chess import last_val_loss, prepare_chess_data, score_model, train_to
    from .interp.collect import default_layer
    from .io import load_model, write_json
    from .model.config import make_config
    from .train.config import TRAIN_PRESETS

    t_start = time.time()
    blocks, eval_path, engine = prepare_chess_data(out, games, eval_games, make_config(preset).ctx, nodes=200,
                                                   seed=seed, engine=engine, workers=workers)
    eval_games_list = read_games(eval_path)

    results: dict[str, Any] = {"preset": preset, "engine": engine, "games": games, "eval_games": eval_games,
                               "steps": steps, "seed": seed, "rows": []}
    for name, mlp in ROWS:
        run = out / "runs" / mlp
        tcfg = {**TRAIN_PRESETS.get(preset, {}), "eval_interval": steps, "ckpt_interval": steps,
                "data": str(blocks), "seed": seed + 1337, "device": device}
        train_to(run, steps, make_config(preset, mlp), tcfg)
        model = load_model(run)
        dev = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        row = {"model": name, "mlp": mlp, "val_loss": last_val_loss(run),
               **score_model(model, eval_games_list, default_layer(model), dev)}
        results["rows"].append(row)
        write_json(out / "scores" / f"{mlp}.json", row)
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
