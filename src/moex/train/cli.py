"""``moex train`` and ``moex upcycle``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model.config import BACKBONES, MLP_PRESETS, ConfigError, parse_overrides


def cmd_train(args: argparse.Namespace) -> None:
    from .config import build_configs, load_config_file, split_overrides
    from .trainer import train

    overrides = load_config_file(args.config) if args.config else {}
    overrides.update(parse_overrides(args.overrides))
    if args.resume:
        model_over, train_over = split_overrides(overrides)
        if model_over or args.preset or args.mlp:
            raise ConfigError(
                f"--resume continues {args.resume} with its own model; model settings "
                f"({', '.join(model_over) or '--preset/--mlp'}) cannot change")
        if args.data:
            train_over["data"] = args.data
        result = train(args.resume, resume=True, train_overrides=train_over)
        out = args.resume
    else:
        if not args.out:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        if args.data:
            overrides["data"] = args.data
        mcfg, tcfg = build_configs(args.preset or "chess-8l", args.mlp, overrides)
        result = train(args.out, mcfg, tcfg)
        out = args.out
    shown = {k: v for k, v in result.items() if k in ("step", "train_loss", "val_loss", "tokens_per_s", "mfu")}
    print(f"{out}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))


def cmd_upcycle(args: argparse.Namespace) -> None:
    from ..io import load_model, save_model
    from ..model.upcycle import upcycle
    from .checkpoint import latest_checkpoint, read_train_config, write_train_config
    from .config import TrainConfig, split_overrides

    overrides = parse_overrides(args.overrides)
    model_over, train_over = split_overrides(overrides)
    dense = load_model(args.source)
    moe = upcycle(dense, mlp=args.mlp, seed=args.seed, **model_over)
    out = Path(args.out)
    if latest_checkpoint(out) is not None:
        raise ConfigError(f"{out} already holds checkpoints; choose another --out")
    save_model(moe, out)
    src_train = Path(args.source) / "train.json"
    tcfg = read_train_config(Path(args.source)) if src_train.exists() else TrainConfig()
    tcfg = TrainConfig.from_dict({**tcfg.to_dict(), **train_over})
    write_train_config(out, tcfg)
    print(f"upcycled {args.source} (mlp={dense.cfg.mlp}) -> {out} (mlp preset {args.mlp}); "
          f"continue with: moex train --resume {out} [max_steps=N ...]")


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (new run, or --resume RUN_DIR)")
    p.add_argument("--preset", help=f"backbone: {', '.join(BACKBONES)} (default chess-8l)")
    p.add_argument("--mlp", help=f"MLP preset: {', '.join(MLP_PRESETS)}")
    p.add_argument("--data", help="data directory (meta.json + train.bin/val.bin)")
    p.add_argument("--config", help="JSON file of settings (flat, or {'model': {...}, 'train': {...}})")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="model or train settings")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("upcycle", help="an MoE run initialised from a trained dense run")
    p.add_argument("--from", dest="source", required=True, help="dense run directory")
    p.add_argument("--mlp", "--preset", dest="mlp", default="moex", help="MoE preset: moex, switch, ...")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the expert partition")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_upcycle)
