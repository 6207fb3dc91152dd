"""``moex train`` and ``moex upcycle``."""

from __future__ import annotations

import argparse

from ..cliutil import add_command, add_settings, refused_flag, settings_of
from ..model.config import BACKBONES


def cmd_train(args: argparse.Namespace) -> None:
    from .trainer import run_training

    settings = settings_of(args, sections=("model", "train"))
    if args.data:
        settings["data"] = args.data
    out, result = run_training(args.out, args.preset, args.mlp, settings, resume=args.resume)
    shown = {k: v for k, v in result.items() if k in ("step", "train_loss", "val_loss", "tokens_per_s", "mfu")}
    print(f"{out}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))


def cmd_upcycle(args: argparse.Namespace) -> None:
    from .trainer import upcycle_run

    out = upcycle_run(args.source, args.out, mlp=args.mlp, seed=args.seed,
                      settings=settings_of(args, sections=("model", "train")))
    print(f"upcycled {args.source} -> {out} (mlp preset {args.mlp}); "
          f"continue with: moex train --resume {out} [max_steps=N ...]")


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    from ..model.config import ModelConfig
    from ..model.layer import mlp_presets
    from .config import TrainConfig

    keys = (f"model keys: {', '.join(k for k in ModelConfig.keys() if k != 'extra')}; train keys (defaults in "
            f"moex.TrainConfig): {', '.join(TrainConfig.keys())}")

    p = add_command(sub, "train")
    p.add_argument("--preset", help=f"backbone: {', '.join(BACKBONES)} (default chess-8l)")
    p.add_argument("--mlp", help=f"MLP preset: {', '.join(mlp_presets())}")
    p.add_argument("--data", help="data directory (meta.json + train.bin/val.bin)")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    add_settings(p, f"{keys}; a file may group them under 'model' and 'train'")
    for key in ("device", "seed"):  # train settings here (kept in the run's train.json, so a resume keeps them)
        refused_flag(p, f"--{key}", f"{{flag}}: in moex train, {key} is a train setting kept in the run's "
                                    f"train.json: write {key}={{value}}")
    p.set_defaults(func=cmd_train)

    p = add_command(sub, "upcycle")
    p.add_argument("--from", dest="source", required=True, help="dense run directory")
    p.add_argument("--mlp", default="moex", help="MoE preset: moex, switch, ...")
    refused_flag(p, "--preset", "{flag} names the backbone in moex train; the upcycled run keeps its source's "
                                "backbone and takes its MoE preset from --mlp (--mlp {value})")
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the expert partition")
    add_settings(p, f"the MoE's model keys and the continued run's train keys ({keys})")
    p.set_defaults(func=cmd_upcycle)
