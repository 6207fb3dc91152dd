"""Argument-parsing helpers shared by the ``moex`` subcommands (CLI layer only; the library never imports
this). Every command that takes settings accepts ``key=value`` arguments and ``--config FILE``."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from .config import read_settings


# Every top-level command: the module and function that register it, and its one-line help. ``moex --help`` shows
# this table without importing the command modules (some import torch); a command's own parser is built only when
# it is the one being run (or by ``build_parser()`` for every command).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "model": ("moex.cli", "add_model_commands",
        "inspect model configurations"),
    "data": ("moex.data.cli", "add_data_commands",
        "build training and evaluation data"),
    "train": ("moex.training.cli", "add_train_commands",
        "train a model (new run, or --resume RUN_DIR)"),
    "upcycle": ("moex.training.cli", "add_train_commands",
        "an MoE run initialised from a trained dense run"),
    "eval": ("moex.eval.cli", "add_eval_commands",
        "evaluate language models"),
    "sae": ("moex.interp.cli", "add_interp_commands",
        "sparse-autoencoder baseline on the residual stream"),
    "interp": ("moex.interp.cli", "add_interp_commands",
        "interpretability metrics"),
    "experiment": ("moex.experiments.cli", "add_experiment_commands",
        "reproduce the papers' experiments"),
    "demo": ("moex.experiments.cli", "add_experiment_commands",
        "small end-to-end run: data, dense GELU, Switch and MoE-X upcycled from it, Table-1-style "
        "comparison (the experiment's 'demo' scale)"),
    "probe": ("moex.analysis.cli", "add_analysis_commands",
        "k-sparse probing of dense vs expert neurons (The Expert Strikes Back)"),
    "experts": ("moex.analysis.cli", "add_analysis_commands",
        "explain and score whole experts of MoE layers with an LLM and the token baseline"),
    "autointerp": ("moex.autointerp.cli", "add_autointerp_commands",
        "explain and score features with an LLM (detection, fuzzing); 'compare DIR...' puts runs side by "
        "side; 'judge' runs the judge check alone"),
    "browse": ("moex.browse.cli", "add_browse_command",
        "a static site of a layer's features (and experts): boards, text, scores"),
    "export": ("moex.export.cli", "add_export_commands",
        "write a moex model in another ecosystem's layout"),
}


def add_command(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of top-level command ``name``, with its help from ``COMMANDS``."""
    return sub.add_parser(name, help=COMMANDS[name][2], **kwargs)


def add_settings(p: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE`` and positional ``KEY=VALUE`` settings (``what`` names the accepted keys)."""
    p.add_argument("--config", metavar="FILE", help=f"JSON file of settings ({what})")
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE", help=f"settings: {what}")


class RefusedFlag(argparse.Action):
    """An option form moex no longer takes: refused with a message naming the form to use."""

    def __init__(self, option_strings, dest, instead: str = "", **kw):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kw)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None):
        raise argparse.ArgumentError(self, self.instead.format(flag=option_string,
                                                               value=values if values is not None else "VALUE"))


def renamed_flag(p: argparse.ArgumentParser, flag: str, setting: str) -> None:
    """``flag`` became the ``key=value`` setting ``setting``."""
    p.add_argument(flag, action=RefusedFlag, dest=f"refused_{setting}",
                   instead=f"{{flag}} is now a setting: write {setting}={{value}} (settings are key=value)")


def refused_flag(p: argparse.ArgumentParser, flag: str, instead: str) -> None:
    """``flag`` is refused with ``instead`` ({flag} and {value} filled in)."""
    p.add_argument(flag, action=RefusedFlag, dest=f"refused_{flag.strip('-')}", instead=instead)


SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def gather_settings(args: argparse.Namespace) -> None:
    """Move ``key=value`` items that a list option swallowed (``--data a.txt top=4``) to the settings, where
    the command takes settings; a path that exists is left where it is."""
    if not isinstance(getattr(args, "settings", None), list):
        return
    for name, value in vars(args).items():
        if name == "settings" or not isinstance(value, list):
            continue
        moved = [v for v in value if isinstance(v, str) and SETTING.match(v) and not os.path.exists(v)]
        if moved:
            value[:] = [v for v in value if v not in moved]
            args.settings.extend(moved)


def settings_of(args: argparse.Namespace, sections: tuple[str, ...] = ()) -> dict[str, Any]:
    return read_settings(args.config, args.settings, sections)


def cpus() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
