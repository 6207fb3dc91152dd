"""The ``moex`` command line. Each subcommand is a thin wrapper over the library."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import MoexError
from .model.config import BACKBONES, MLP_PRESETS, make_config, parse_overrides


class UserError(MoexError):
    """An error caused by the user's input: printed without a traceback, exit code 2."""


# model ------------------------------------------------------------------------------------------
def cmd_model_summary(args: argparse.Namespace) -> None:
    import torch

    from .model.gpt import GPT
    from .model.summary import format_summary, summarize

    cfg = make_config(args.preset, args.mlp, **parse_overrides(args.set))
    with torch.device("meta"):
        model = GPT(cfg)
    s = summarize(model)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect model configurations")
    msub = p.add_subparsers(dest="model_cmd", required=True)
    s = msub.add_parser("summary", help="total and activated parameter counts, per-layer layout")
    s.add_argument("--preset", default="chess-8l", help=f"backbone: {', '.join(BACKBONES)}")
    s.add_argument("--mlp", default=None, help=f"MLP preset or kind: {', '.join(MLP_PRESETS)}")
    s.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. n_experts=16")
    s.add_argument("--json", action="store_true", help="print JSON (keys total_params, active_params, layers)")
    s.set_defaults(func=cmd_model_summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moex", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_model_commands(sub)
    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list:
    """Subcommand registrars of the other packages, imported lazily so ``moex --help`` stays fast."""
    from .data.cli import add_data_commands
    from .demo import add_demo_command
    from .eval.cli import add_eval_commands
    from .experiments.chess import add_experiment_commands
    from .interp.cli import add_interp_commands
    from .train.cli import add_train_commands

    return [add_data_commands, add_train_commands, add_eval_commands, add_interp_commands, add_experiment_commands,
            add_demo_command]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (MoexError, FileNotFoundError) as e:
        print(f"moex: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
