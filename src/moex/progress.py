"""Progress for long jobs: a tqdm bar on a terminal, one plain line every ``interval`` seconds otherwise.

A bar redrawn with carriage returns fills a log file or a pipe (a demo's log grew to a megabyte of bars), so
where standard error is not a terminal the same call writes ``desc: n/total [elapsed<remaining, rate]`` lines
instead: at the start, every ``LOG_INTERVAL`` seconds, and at the end.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two progress lines in a log


class LineProgress(tqdm):
    """tqdm that writes a line per update interval instead of redrawing a bar."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, miniters=1, ascii=True,
                      bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None, final: bool = False) -> bool:
        now = self._time()
        if not final and now - getattr(self, "_last_write", -LOG_INTERVAL) < LOG_INTERVAL:
            return True
        line = (msg if msg is not None else self.__str__()).strip()
        if line and line != getattr(self, "_last_line", None):
            self.fp.write(line + "\n")
            self.fp.flush()
            self._last_line, self._last_write = line, now
        return True

    def close(self) -> None:
        if self.disable:
            return
        self.display(final=True)
        self._decr_instances(self)
        self.disable = True  # tqdm's own close would write a carriage return


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; ``LineProgress`` where standard error is a file or a pipe."""
    if kwargs.get("disable") or sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return LineProgress(iterable, **kwargs)
