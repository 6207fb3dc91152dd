"""Headless Chromium for the browser's pages: the DOM after the page's scripts ran, and screenshots.

Driven through Chromium's own command line (``--dump-dom``, ``--screenshot``) with a virtual-time budget,
so the lazily loaded data scripts have run before the DOM is read. Debian's package is ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import MoexError

NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """The Chromium executable (``$MOEX_CHROMIUM``, else the first of ``NAMES`` on the PATH), or None."""
    env = os.environ.get("MOEX_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, NAMES) if p), None)


def _run(url: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise MoexError(f"no Chromium found (tried {', '.join(NAMES)}; apt-get install chromium, or set "
                        "MOEX_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="moex-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--allow-file-access-from-files", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
               *extra, url]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        except subprocess.CalledProcessError as e:
            raise MoexError(f"chromium failed on {url}: {e.stderr.strip().splitlines()[-1:] or e.returncode}") from None
        except subprocess.TimeoutExpired:
            raise MoexError(f"chromium did not finish {url} in {timeout:.0f} s") from None


def page_url(site: str | Path, page: str) -> str:
    """A ``file://`` URL of ``page`` (e.g. ``feature.html?id=3``) in the site directory."""
    return Path(site).resolve().as_uri() + "/" + page


def dump_dom(url: str, timeout: float = 60) -> str:
    """The page's DOM (HTML) after its scripts ran."""
    return _run(url, ["--dump-dom"], timeout).stdout


def screenshot(url: str, png: str | Path, width: int = 1280, height: int = 1000, timeout: float = 60) -> Path:
    """A PNG of the page at ``width`` x ``height``."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(url, [f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars"], timeout)
    if not png.exists():
        raise MoexError(f"chromium wrote no screenshot of {url}")
    return png


def showcase_feature(site: str | Path) -> int:
    """A feature worth a screenshot: the best BSP F1 (chess), else the best detection score, else the highest
    max activation among features that fire on at most a fifth of the tokens."""
    import numpy as np

    from .build import read_site_data

    f = read_site_data(Path(site) / "data" / "index.js")["features"]
    for key in ("best_f1", "detection"):
        if key in f and any(v for v in f[key]):
            return int(np.argmax([v or 0 for v in f[key]]))
    return int(np.argmax([m if q and q <= 0.2 else 0 for m, q in zip(f["f_max"], f["frequency"])]))


def screenshots(site: str | Path, out: str | Path, feature: int | None = None, expert: int | None = 0) -> list[Path]:
    """One screenshot of each page kind of a built site: index, a feature (default ``showcase_feature``), an
    expert (MoE layers), the model."""
    from ..artifacts import read_json

    rec = read_json(Path(site) / "site.json")
    feature = showcase_feature(site) if feature is None else feature
    pages = [("index", "index.html", 1000), ("feature", f"feature.html?id={feature}", 2200),
             ("model", "model.html", 1500)]
    if rec.get("moe") and expert is not None:
        pages.insert(2, ("expert", f"expert.html?id={expert}", 1000))
    return [screenshot(page_url(site, page), Path(out) / f"{name}.png", height=height) for name, page, height in pages]
