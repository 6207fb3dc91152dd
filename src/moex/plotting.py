"""Plots are written to files only: matplotlib with the Agg backend, optional (the ``test`` extra has it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot(what: str) -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or None (and a line saying ``what`` is skipped) without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: {what} skipped (pip install matplotlib)")
        return None
    return plt


def save_figure(fig: Any, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
