"""Argument-parsing helpers shared by the ``moex`` subcommands (CLI layer only; the library never imports
this). Every command that takes settings accepts ``key=value`` arguments and ``--config FILE``."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from .config import read_settings


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
