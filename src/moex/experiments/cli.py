"""``moex experiment chess`` and ``moex demo``."""

from __future__ import annotations

import argparse

from ..cliutil import add_command, add_settings, renamed_flag, settings_of
from ..errors import MoexError


def cmd_experiment_chess(args: argparse.Namespace) -> None:
    from .chess import run_chess_experiment
    from .studies import run_study

    settings = settings_of(args)
    engine = settings.pop("engine", "auto")
    if args.study:
        if args.only or args.fresh:
            raise MoexError("--only and --fresh apply to the tables, not to --study")
        run_study(args.study, args.out, scale=args.scale, seed=args.seed, engine=engine, device=args.device,
                  workers=args.workers, games_dir=args.games, settings=settings, eval_file=args.eval_games)
        return
    run_chess_experiment(args.out, scale=args.scale, seed=args.seed, engine=engine, device=args.device,
                         workers=args.workers, games_dir=args.games, only=args.only, fresh=args.fresh,
                         settings=settings, eval_file=args.eval_games)


def cmd_demo(args: argparse.Namespace) -> None:
    from .chess import run_demo

    settings = settings_of(args)
    run_demo(args.out, seed=args.seed, engine=settings.pop("engine", "auto"), device=args.device,
             workers=args.workers, **settings)


def run_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--seed", type=int, default=0)
    renamed_flag(s, "--engine", "engine")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=0, help="self-play processes (default: all CPUs)")


SCALE_KEYS = ("engine=auto|stockfish|random (self-play; auto: Stockfish when installed); scale keys: preset, games, "
              "eval_games, nodes, steps, up_steps, batch_size, sae_steps, sae_width, prefixes, train (a JSON object of "
              "train keys), overrides (per MLP preset), rows")


def add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    from .chess import SCALES
    from .studies import STUDIES

    p = add_command(sub, "experiment")
    esub = p.add_subparsers(dest="experiment_cmd", required=True)
    s = esub.add_parser("chess", help="Tables 1, 3, 4 + SAE row + router analysis on chess")
    s.add_argument("--scale", choices=list(SCALES), default="tiny")
    s.add_argument("--out", required=True)
    s.add_argument("--games", help="use this directory's games.txt (moex data chess import) for training")
    s.add_argument("--eval-games", metavar="FILE",
                   help="held-out games.txt to evaluate on (its first eval_games games) instead of self-play games")
    s.add_argument("--only", nargs="+", help="rows to run now (others are kept or left for later)")
    s.add_argument("--fresh", action="store_true", help="re-score every row (trained runs are kept)")
    s.add_argument("--study", choices=STUDIES,
                   help="instead of the tables, one of the paper's studies: width (Fig. 3), "
                   "sparsity (Fig. 4), scaling (Fig. 5), dynamics (Fig. 10), layers (Fig. 11), tsne (Fig. 6); "
                   "written to OUT/STUDY")
    run_options(s)
    add_settings(s, SCALE_KEYS)
    s.set_defaults(func=cmd_experiment_chess)

    p = add_command(sub, "demo")
    p.add_argument("--out", default="moex-demo")
    run_options(p)
    add_settings(p, SCALE_KEYS + " (e.g. steps=300 games=2000)")
    p.set_defaults(func=cmd_demo)
