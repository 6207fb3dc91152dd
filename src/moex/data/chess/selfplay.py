"""Self-play game generation: Stockfish (the chess_gpt_eval recipe) or a pure-Python random player.

Recipe (METHODS sec 3): White is Stockfish skill 20; Black's level L is 20 in 15% of games, else drawn
from -2..20 with probability proportional to 0.93^L; level -2 plays a uniformly random legal move,
level -1 is skill 0 searching 1 node. 30% of games start from a random line of an openings file.
Reproducibility: every game draws from its own RNG seeded by (seed, game index), so the games do not
depend on the number of workers, and the engine searches a fixed number of nodes per move with one
thread and a fresh hash per game. Stockfish's own ``Skill Level`` draws from a clock-seeded generator
and cannot be reproduced, so by default a Black level L < 20 is emulated: with probability
(20 - L) / 40 Black plays a weighted random legal move from the game's RNG, otherwise Stockfish's best
move at ``nodes * (L + 1) / 21`` nodes; level -1 searches depth 1 / 1 node at full skill. ``exact_recipe=True`` uses ``Skill Level`` and a 0.01 s time
limit per move instead (closer to the reference, not reproducible).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.util
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import chess
import chess.engine
from ...progress import progress_bar

from ...config import Config, ConfigError
from .importer import open_text
from .transcript import TranscriptError, moves_to_transcript, transcript_sans

LEVELS = list(range(-2, 21))
LEVEL_WEIGHTS = [0.93**level for level in LEVELS]


@dataclass
class SelfPlayConfig(Config):
    label: ClassVar[str] = "self-play"

    engine: str = "auto"  # stockfish | random | auto (Stockfish when installed, else random)
    nodes: int = 2000  # per White move (Black: scaled by level)
    movetime: float = 0.01  # exact_recipe only
    max_plies: int = 400
    opening_fraction: float = 0.3
    random_plies: int = 0  # the first plies (after any opening line) uniformly random: varied openings
    exact_recipe: bool = False
    stockfish_path: str | None = None
    engine_timeout: float = 20.0  # seconds for Stockfish to answer UCI at start-up

    def validate(self) -> None:
        if self.engine not in ("auto", "stockfish", "random"):
            raise ConfigError(f"engine={self.engine!r} must be auto, stockfish or random")
        for key in ("nodes", "max_plies", "engine_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must be positive")
        if not 0 <= self.opening_fraction <= 1:
            raise ConfigError(f"opening_fraction={self.opening_fraction}: must be in 0..1")
        if not 0 <= self.random_plies < self.max_plies:
            raise ConfigError(f"random_plies={self.random_plies}: must be in 0..max_plies-1 ({self.max_plies - 1})")

    def resolved(self) -> "SelfPlayConfig":
        """``engine=auto`` made concrete: Stockfish when it is installed, else the random player (said)."""
        if self.engine != "auto":
            return self
        if self.stockfish_path:  # named explicitly: it must be there, no silent fallback
            require_stockfish(self.stockfish_path, "leave stockfish_path unset")
        if find_stockfish(self.stockfish_path):
            return dataclasses.replace(self, engine="stockfish")
        print("Stockfish not found (apt-get install stockfish): using the pure-Python random player")
        return dataclasses.replace(self, engine="random")


def find_stockfish(path: str | None = None) -> str | None:
    if path:
        return path if Path(path).exists() or shutil.which(path) else None
    for cand in ("stockfish", "/usr/games/stockfish", "/usr/bin/stockfish"):
        found = shutil.which(cand) or (cand if Path(cand).exists() else None)
        if found:
            return found
    return None


class StockfishMissing(ConfigError):
    """Stockfish is needed and was not found (or ``stockfish_path`` names nothing)."""


def require_stockfish(path: str | None, otherwise: str) -> str:
    """The Stockfish executable to run, or ``StockfishMissing`` saying how to install it or ``otherwise``."""
    found = find_stockfish(path)
    if found is None:
        where = f"stockfish_path={path!r} does not exist" if path else "Stockfish was not found on PATH or in /usr/games"
        raise StockfishMissing(f"{where}: install it (apt-get install stockfish, brew install stockfish) or {otherwise}")
    return found


def open_stockfish(path: str | None, otherwise: str, timeout: float = 20) -> chess.engine.SimpleEngine:
    """Stockfish (``require_stockfish``) started as a UCI engine; a program that is not one (it hangs, exits
    or says something else within ``timeout`` seconds) is a ``StockfishMissing`` naming it."""
    found = require_stockfish(path, otherwise)
    try:
        return chess.engine.SimpleEngine.popen_uci(found, timeout=timeout)
    except (chess.engine.EngineError, chess.engine.EngineTerminatedError, OSError, TimeoutError) as e:
        reason = f"no UCI answer within {timeout:g} s" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
        raise StockfishMissing(f"{found}: could not start it as a UCI engine ({reason})") from None


def random_move(board: chess.Board, rng: random.Random) -> chess.Move:
    """A legal move, weighted towards captures (x4) and promotions (x5): the fast fallback player."""
    moves = list(board.legal_moves)
    occupied = board.occupied_co[not board.turn]
    weights = [
        (5.0 if m.promotion else 1.0) * (4.0 if (occupied >> m.to_square) & 1 else 1.0) for m in moves
    ]
    return rng.choices(moves, weights=weights, k=1)[0]


def black_level(rng: random.Random) -> int:
    return 20 if rng.random() < 0.15 else rng.choices(LEVELS, weights=LEVEL_WEIGHTS, k=1)[0]


def read_openings(path: str | Path) -> list[str]:
    """Opening lines, one transcript a line (a header line ``opening`` is skipped); each line is checked."""
    with open_text(path) as f:
        lines = [ln.strip() for ln in f]
    start = 1 if lines and lines[0] == "opening" else 0
    out = []
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line:
            continue
        try:
            opening_moves(line)
        except (ValueError, TranscriptError) as e:
            raise ConfigError(f"{path}:{n}: not a legal opening line ({e})") from None
        out.append(line)
    return out


def opening_moves(line: str) -> list[chess.Move]:
    board = chess.Board()
    moves = []
    for san in transcript_sans(line):
        moves.append(board.push_san(san))
    return moves


class Player:
    """Plays one side of self-play games in one process (one engine per process)."""

    def __init__(self, cfg: SelfPlayConfig):
        self.cfg = cfg
        self.engine = None
        if cfg.engine == "stockfish":
            self.engine = open_stockfish(cfg.stockfish_path, "use engine=random", cfg.engine_timeout)
            self.engine.configure({"Threads": 1, "Hash": 16})

    def close(self) -> None:
        if self.engine is not None:
            try:
                self.engine.quit()
            except chess.engine.EngineTerminatedError:
                pass
            self.engine = None

    def engine_move(self, board: chess.Board, level: int, rng: random.Random, game_id: object) -> chess.Move:
        if self.engine is None:
            return random_move(board, rng)
        if level == -2:
            return rng.choice(list(board.legal_moves))
        if level == -1:  # depth 1 / 1 node; skill 20 because Skill Level < 20 randomises with the clock
            self.engine.configure({"Skill Level": 0 if self.cfg.exact_recipe else 20})
            return self.engine.play(board, chess.engine.Limit(nodes=1, depth=1), game=game_id).move
        if self.cfg.exact_recipe:
            self.engine.configure({"Skill Level": level})
            return self.engine.play(board, chess.engine.Limit(time=self.cfg.movetime), game=game_id).move
        if rng.random() < (20 - level) / 40:
            return random_move(board, rng)
        self.engine.configure({"Skill Level": 20})
        limit = chess.engine.Limit(nodes=max(1, self.cfg.nodes * (level + 1) // 21))
        return self.engine.play(board, limit, game=game_id).move

    def play(self, seed: int, index: int, openings: list[str]) -> str:
        rng = random.Random(f"{seed}:{index}")
        board = chess.Board()
        moves: list[chess.Move] = []
        if openings and rng.random() < self.cfg.opening_fraction:
            for m in opening_moves(rng.choice(openings)):
                board.push(m)
                moves.append(m)
        level = black_level(rng)
        random_until = len(moves) + self.cfg.random_plies
        while not board.is_game_over() and len(moves) < self.cfg.max_plies:
            lvl = 20 if board.turn == chess.WHITE else level
            if len(moves) < random_until:
                m = rng.choice(list(board.legal_moves))
            else:
                m = self.engine_move(board, lvl, rng, game_id=(seed, index))
            board.push(m)
            moves.append(m)
        return moves_to_transcript(moves)


_player: Player | None = None
_openings: list[str] = []


def _init_worker(cfg: SelfPlayConfig, openings: list[str]) -> None:
    global _player, _openings
    _player, _openings = Player(cfg), openings
    multiprocessing.util.Finalize(None, _player.close, exitpriority=10)


def _play(args: tuple[int, int]) -> tuple[int, str]:
    seed, index = args
    assert _player is not None
    return index, _player.play(seed, index, _openings)


def generate_games(
    n_games: int, out_dir: str | Path, cfg: SelfPlayConfig, seed: int = 0, workers: int = 1,
    openings: list[str] | None = None, progress: bool = True,
) -> Path:
    """Play ``n_games`` and write them, in index order, to ``out_dir/games.txt``."""
    if n_games < 1:
        raise ConfigError(f"n_games={n_games}: the number of games must be at least 1")
    if workers < 0:
        raise ConfigError(f"workers={workers} must be >= 0")
    cfg = cfg.resolved()
    if cfg.engine == "stockfish":  # before any worker starts: a broken engine would kill every worker
        open_stockfish(cfg.stockfish_path, "use engine=random", cfg.engine_timeout).quit()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    openings = openings or []
    results: dict[int, str] = {}
    tasks = [(seed, i) for i in range(n_games)]
    bar = progress_bar(total=n_games, desc=f"self-play ({cfg.engine})", unit=" games", disable=not progress)
    if workers <= 1:
        _init_worker(cfg, openings)
        try:
            for t in tasks:
                i, g = _play(t)
                results[i] = g
                bar.update(1)
        finally:
            _player.close()
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(cfg, openings))
        try:
            for i, g in pool.imap_unordered(_play, tasks, chunksize=1):
                results[i] = g
                bar.update(1)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        pool.join()
    bar.close()
    path = out_dir / "games.txt"
    tmp = out_dir / ".games.txt.tmp"
    tmp.write_text("".join(results[i] + "\n" for i in range(n_games)))
    tmp.replace(path)
    return path
