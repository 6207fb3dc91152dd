"""Progress lines in a log: no carriage returns, a line at the start, every interval and at the end."""

import io
import sys
import time

from tqdm import tqdm

from moex import progress as mp


def test_a_log_gets_lines_not_bars(monkeypatch):
    out = io.StringIO()
    bar = mp.LineProgress(total=1000, desc="train x", unit="step", file=out)
    for i in range(1000):
        bar.update(1)
        bar.set_postfix(loss=1 / (i + 1))
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("train x: 0/1000") and lines[1].startswith("train x: 1000/1000")


def test_lines_every_interval(monkeypatch):
    out = io.StringIO()
    bar = mp.LineProgress(total=20, desc="iter", file=out)
    now = [time.time()]
    monkeypatch.setattr(bar, "_time", lambda: now[0])
    for _ in range(20):  # a step every 10 s
        now[0] += 10
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # the start, one line per 30 s of 10-s steps, the end
    assert len(lines) == 1 + 200 // 30 + 1 and lines[-1].startswith("iter: 20/20")


def test_a_terminal_gets_a_bar(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert type(mp.progress_bar(total=3, disable=True)) is tqdm and type(mp.progress_bar(total=3)) is tqdm
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(mp.progress_bar(total=3), mp.LineProgress)
