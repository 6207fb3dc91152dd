"""Argument-parsing helpers shared by the ``moex`` subcommands (CLI layer only; the library never imports
this). Every command that takes settings accepts ``key=value`` arguments and ``--config FILE``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .config import read_settings


def add_settings(p: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE`` and positional ``KEY=VALUE`` settings (``what`` names the accepted keys)."""
    p.add_argument("--config", metavar="FILE", help=f"JSON file of settings ({what})")
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE", help=f"settings: {what}")


def settings_of(args: argparse.Namespace, sections: tuple[str, ...] = ()) -> dict[str, Any]:
    return read_settings(args.config, args.settings, sections)


def cpus() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
