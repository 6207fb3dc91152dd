"""Import games from PGN (plain, .gz, .zst) and CSV (a ``transcript`` column) into ``games.txt``.

A bad game is skipped and recorded in ``skipped.jsonl`` (source, game index, reason); a bad file is
recorded and the import goes on with the other inputs.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import multiprocessing
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import chess
import chess.pgn

from ...errors import MoexError
from ...progress import progress_bar
from .transcript import TranscriptError, canonical, moves_to_transcript
from .vocab import find_bad_char


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, decompressing .gz and .zst; undecodable bytes are replaced, not fatal."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    if path.suffix == ".zst":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


@dataclass
class ImportReport:
    imported: int = 0
    skipped: list[dict] = field(default_factory=list)
    failed_files: list[dict] = field(default_factory=list)

    def skip(self, source: str, index: int, reason: str) -> None:
        self.skipped.append({"source": source, "game": index, "reason": reason})


_TERMINATION = re.compile(r"(1-0|0-1|1/2-1/2|\*)\s*$")


def split_pgn(f: IO[str]) -> Iterator[str]:
    """Split PGN text into one string per game (header block + movetext), without parsing moves."""
    lines: list[str] = []
    in_moves = False
    for line in f:
        if line.startswith("[") and in_moves:
            yield "".join(lines)
            lines, in_moves = [], False
        if line.strip() and not line.startswith("["):
            in_moves = True
        lines.append(line)
    if any(x.strip() for x in lines):
        yield "".join(lines)


def pgn_to_transcript(text: str) -> tuple[str | None, str]:
    """One game's PGN text -> (transcript, "") or (None, reason)."""
    try:
        game = chess.pgn.read_game(io.StringIO(text))
    except Exception as e:  # python-chess raises only on I/O-level problems
        return None, f"unreadable PGN: {e}"
    if game is None:
        return None, "no game in this PGN text"
    if game.errors:
        return None, f"illegal or unparsable move: {game.errors[0]}"
    if not _TERMINATION.search(text):
        return None, "truncated: the movetext does not end with a result (1-0, 0-1, 1/2-1/2 or *)"
    if game.headers.get("SetUp") == "1" or "FEN" in game.headers:
        return None, "starts from a set-up position (FEN), not the initial board"
    return moves_to_transcript(game.mainline_moves()), ""


def csv_to_transcript(text: str, where: str = "transcript") -> tuple[str | None, str]:
    try:
        return canonical(text, where), ""
    except TranscriptError as e:
        return None, f"illegal or unparsable move: {e}"


def _raw_games(path: Path, report: ImportReport, column: str) -> Iterator[tuple[int, str]]:
    """(game index, raw text) of one input file; file-level problems go to ``report.failed_files``."""
    src = str(path)
    if not path.exists():
        report.failed_files.append({"source": src, "reason": "file not found"})
        return
    with open_text(path) as f:
        if is_csv(path):
            csv.field_size_limit(sys.maxsize)
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                cols = ", ".join(reader.fieldnames or []) or "none (empty file)"
                report.failed_files.append({"source": src, "reason": f"no {column!r} column; columns: {cols}"})
                return
            for index, row in enumerate(reader):
                yield index, (row.get(column) or "").strip()
        else:
            n = 0
            for n, text in enumerate(split_pgn(f), 1):
                yield n - 1, text
            if n == 0:
                report.failed_files.append({"source": src, "reason": "no games found (empty or not PGN)"})


def is_csv(path: Path) -> bool:
    return path.name.removesuffix(".gz").removesuffix(".zst").endswith(".csv")


def _convert(item: tuple[bool, int, str]) -> tuple[int, str | None, str]:
    csv_input, index, text = item
    if not text:
        return index, None, "empty game"
    if csv_input:
        t, reason = csv_to_transcript(text, where=f"row {index + 2}")  # the header is row 1
    else:
        t, reason = pgn_to_transcript(text)
    return index, t, reason


def import_games(
    inputs: list[str | Path], out_dir: str | Path, min_chars: int = 150, column: str = "transcript",
    workers: int = 1, progress: bool = True,
) -> ImportReport:
    """Write ``out_dir/games.txt`` (one transcript a line, input order; each distinct transcript once, so
    held-out splits cannot share a game with training) and ``out_dir/skipped.jsonl``."""
    if min_chars < 0:
        raise MoexError(f"min_chars={min_chars} must be >= 0")
    if workers < 1:
        raise MoexError(f"workers={workers} must be at least 1")
    for path in map(Path, inputs):
        if not path.is_file():
            raise MoexError(f"{path} not found" if not path.exists() else f"{path} is not a file")
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ImportReport()
    seen: dict[bytes, tuple[str, int]] = {}  # a game in two files (e.g. two players' collections) is kept once
    tmp = out_dir / ".games.txt.tmp"
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        with open(tmp, "w") as out, progress_bar(desc="import", unit=" games", disable=not progress) as bar:
            for path in map(Path, inputs):
                src, csv_input = str(path), is_csv(path)
                items = ((csv_input, i, text) for i, text in _raw_games(path, report, column))
                results = pool.imap(_convert, items, chunksize=64) if pool else map(_convert, items)
                for index, t, reason in results:
                    bar.update(1)
                    if t is None:
                        report.skip(src, index, reason)
                    elif (bad := find_bad_char(t)) >= 0:
                        report.skip(src, index, f"character {t[bad]!r} at column {bad + 1} not in the vocabulary")
                    elif len(t) < min_chars:
                        report.skip(src, index, f"shorter than {min_chars} characters ({len(t)})")
                    elif (first := seen.setdefault(hashlib.blake2b(t.encode(), digest_size=16).digest(),
                                                   (src, index))) != (src, index):
                        report.skip(src, index, f"duplicate (the same transcript as {first[0]} game {first[1]})")
                    else:
                        out.write(t + "\n")
                        report.imported += 1
    finally:
        if pool:
            pool.close()
        if report.imported == 0:  # nothing to keep: no empty games.txt or skipped.jsonl left behind
            tmp.unlink(missing_ok=True)
            if created:
                shutil.rmtree(out_dir, ignore_errors=True)
    if report.imported == 0:
        why = [f"{f['source']}: {f['reason']}" for f in report.failed_files]
        reasons = Counter(e["reason"].split(" (")[0] for e in report.skipped)
        why += [f"{n} skipped: {r}" for r, n in reasons.most_common(3)]
        raise MoexError(f"no game was imported ({'; '.join(why) or 'the inputs hold no game'})")
    tmp.replace(out_dir / "games.txt")
    with open(out_dir / "skipped.jsonl", "w") as f:
        for entry in report.skipped + [{**e, "game": None} for e in report.failed_files]:
            f.write(json.dumps(entry) + "\n")
    return report


def read_games(path: str | Path) -> list[str]:
    """Read a ``games.txt`` (one transcript per line, each starting with ``;``)."""
    games = []
    if not Path(path).is_file():
        raise MoexError(f"{path} not found" if not Path(path).exists() else f"{path} is not a file")
    try:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                if not line.startswith(";"):
                    hint = " (a PGN file? convert it with `moex data chess import`)" if line.startswith("[") else ""
                    raise MoexError(f"{path}:{lineno}: a transcript must start with ';' (got {line[:20]!r}){hint}")
                games.append(line)
    except UnicodeDecodeError:
        raise MoexError(f"{path}: not a text file of game transcripts (undecodable bytes)") from None
    if not games:
        raise MoexError(f"{path}: no games")
    return games
