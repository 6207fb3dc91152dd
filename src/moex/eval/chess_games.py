"""Games against Stockfish (Karvonen's chess_gpt_eval protocol; METHODS sec 10), and an Elo estimate.

The player writes its move after the transcript so far (``;1.e4 e5 2.``). A model gets ``max_attempts``
tries per move, attempt a (0-based) sampled at temperature min(a / 5 + 0.001, 0.5), so the first is
near-greedy; every failed try (illegal or unparsable) is counted, and a move with no legal try loses the
game ("forfeit"). All games in a match advance together, so the model writes the moves of every game
whose turn it is in one batch. A transcript longer than the model's context is cut to its end
(``fit_prompt``): the model never saw a game's later characters in training.
Opponents: Stockfish ``Skill Level`` L (0-20) at ``movetime`` seconds a move; level -1 is skill 0
searching depth 1 / 1 node; level -2 plays a uniformly random legal move (no Stockfish needed).
Baseline players in the same table: ``random`` (a uniformly random legal move) and ``first-legal`` (the
first legal move in python-chess's generation order).
Elo: the maximum-likelihood rating R given each game's score s against an opponent of rating R_o, with
expected score 1 / (1 + 10^((R_o - R) / 400)) and draws as 1/2; 95% interval by the likelihood ratio
(log-likelihood within 1.92 of its maximum). Opponent ratings: Stockfish 12-15's own UCI_Elo-to-skill
conversion inverted, Elo(L) = 1346.6 + 143.4 L^0.806 (on the CCRL 40/4 scale, at longer time controls
than these games: an approximation). Levels -1 and -2 have no rating and are left out of the fit.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import chess
import chess.engine
import numpy as np
from ..progress import progress_bar

from ..config import Config, ConfigError
from ..data.chess.selfplay import StockfishMissing, open_stockfish, opening_moves, read_openings  # noqa: F401 (re-exported)
from ..data.chess.transcript import moves_to_transcript
from .legal_moves import MoveWriter, classify


def skill_elo(level: int) -> float | None:
    """Approximate Elo of Stockfish ``Skill Level`` ``level`` (None for the levels -1 and -2)."""
    return 1346.6 + 143.4 * level ** 0.806 if level >= 0 else None


@dataclass
class MatchConfig(Config):
    """A match: each player against each level, ``games_per_level`` games per level and colour."""

    label: ClassVar[str] = "match"

    levels: list = field(default_factory=lambda: [0])  # Stockfish skill levels (-2..20)
    games_per_level: int = 4  # games per level and colour
    colors: str = "both"  # white | black | both: the colours the player plays
    movetime: float = 0.05  # Stockfish seconds per move
    max_attempts: int = 5
    max_plies: int = 300  # a game still going after this many plies is adjudicated a draw
    openings: str = ""  # file of opening lines (one transcript a line); game i starts from line i
    seed: int = 0
    stockfish_path: str = ""
    baselines: list = field(default_factory=lambda: ["random", "first-legal"])

    def validate(self) -> None:
        bad = [lv for lv in self.levels if not isinstance(lv, int) or not -2 <= lv <= 20]
        if bad or not self.levels:
            raise ConfigError(f"levels={self.levels}: Stockfish skill levels are integers -2..20 (-1: skill 0 at "
                              "depth 1; -2: random mover)")
        for key in ("games_per_level", "max_attempts", "max_plies"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 1")
        if self.colors not in ("white", "black", "both"):
            raise ConfigError(f"colors={self.colors!r} must be white, black or both")
        if not self.movetime > 0:
            raise ConfigError(f"movetime={self.movetime} must be > 0 seconds")
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise ConfigError(f"baselines: unknown {', '.join(unknown)}; choose from {', '.join(BASELINES)}")


@dataclass
class GameState:
    level: int
    player_color: bool  # chess.WHITE / chess.BLACK
    board: chess.Board = field(default_factory=chess.Board)
    legal: int = 0  # the player's legal moves
    illegal: int = 0  # the player's failed tries
    termination: str = ""  # set when the game is over

    @property
    def players_turn(self) -> bool:
        return self.board.turn == self.player_color

    def prompt(self) -> str:
        """The transcript so far, up to where the side to move writes its move."""
        t = moves_to_transcript(self.board.move_stack)
        if self.board.turn == chess.WHITE:
            return t + (" " if self.board.move_stack else "") + f"{self.board.fullmove_number}."
        return t + " "


class Player(Protocol):
    name: str

    def moves(self, games: Sequence[GameState]) -> list[chess.Move | None]:
        """A move for each game (None: no legal move found; the game is forfeited). Counts its tries in the
        games' ``legal`` / ``illegal``."""


class WriterPlayer:
    """A ``MoveWriter`` (a model) playing with Karvonen's retry protocol."""

    def __init__(self, writer: MoveWriter, name: str = "model", max_attempts: int = 5):
        self.writer, self.name, self.max_attempts = writer, name, max_attempts

    def moves(self, games: Sequence[GameState]) -> list[chess.Move | None]:
        out: list[chess.Move | None] = [None] * len(games)
        pending = list(range(len(games)))
        for attempt in range(self.max_attempts):
            if not pending:
                break
            temperature = min(attempt / 5 + 0.001, 0.5)
            texts = self.writer([games[i].prompt() for i in pending], [temperature] * len(pending))
            still = []
            for i, text in zip(pending, texts):
                outcome, move = classify(games[i].board, text)
                if outcome == "legal":
                    out[i] = move
                    games[i].legal += 1
                else:
                    games[i].illegal += 1
                    still.append(i)
            pending = still
        return out


class RandomPlayer:
    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def moves(self, games: Sequence[GameState]) -> list[chess.Move | None]:
        for g in games:
            g.legal += 1
        return [self.rng.choice(list(g.board.legal_moves)) for g in games]


class FirstLegalPlayer:
    name = "first-legal"

    def moves(self, games: Sequence[GameState]) -> list[chess.Move | None]:
        for g in games:
            g.legal += 1
        return [next(iter(g.board.legal_moves)) for g in games]


BASELINES = {"random": RandomPlayer, "first-legal": FirstLegalPlayer}


class Opponent:
    """Stockfish at a skill level (one engine process, one thread), or the random mover (level -2)."""

    def __init__(self, cfg: MatchConfig):
        self.cfg, self.rng, self.engine = cfg, random.Random(cfg.seed + 1), None
        if any(lv > -2 for lv in cfg.levels):
            self.engine = open_stockfish(cfg.stockfish_path or None, "play only the random mover (levels=[-2])")
            self.engine.configure({"Threads": 1})

    def move(self, board: chess.Board, level: int) -> chess.Move:
        if level == -2:
            return self.rng.choice(list(board.legal_moves))
        if level == -1:
            limit, skill = chess.engine.Limit(depth=1, nodes=1), 0
        else:
            limit, skill = chess.engine.Limit(time=self.cfg.movetime), level
        return self.engine.play(board, limit, options={"Skill Level": skill}).move

    def close(self) -> None:
        if self.engine is not None:
            self.engine.quit()


def finish(game: GameState, max_plies: int) -> bool:
    """Set ``termination`` if the game is over (claimable draws are claimed); True when it is."""
    outcome = game.board.outcome(claim_draw=True)
    if outcome is not None:
        game.termination = outcome.termination.name.lower()
    elif game.board.ply() >= max_plies:
        game.termination = "max_plies"
    return bool(game.termination)


def player_score(game: GameState) -> float:
    if game.termination == "forfeit":
        return 0.0
    outcome = game.board.outcome(claim_draw=True)
    if outcome is None or outcome.winner is None:
        return 0.5
    return 1.0 if outcome.winner == game.player_color else 0.0


def play_match(player: Player, cfg: MatchConfig, opponent: Opponent | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """Every game of ``player`` against ``cfg.levels``; one record per game (level, colour, score,
    termination, plies, legal and failed tries, the transcript)."""
    openings = read_openings(cfg.openings) if cfg.openings else []
    colors = {"white": [chess.WHITE], "black": [chess.BLACK], "both": [chess.WHITE, chess.BLACK]}[cfg.colors]
    games = []
    for level in cfg.levels:
        for color in colors:
            for i in range(cfg.games_per_level):
                g = GameState(level, color)
                if openings:
                    for m in opening_moves(openings[i % len(openings)]):
                        g.board.push(m)
                games.append(g)
    own = opponent is None
    opponent = opponent or Opponent(cfg)
    bar = progress_bar(total=len(games), desc=f"games ({player.name})", unit="game", disable=not progress)
    try:
        active = [g for g in games if not finish(g, cfg.max_plies)]
        while active:
            turn = [g for g in active if g.players_turn]
            for g, move in zip(turn, player.moves(turn) if turn else []):
                if move is None:
                    g.termination = "forfeit"
                else:
                    g.board.push(move)
                    finish(g, cfg.max_plies)
            for g in active:
                if not g.termination and not g.players_turn:
                    g.board.push(opponent.move(g.board, g.level))
                    finish(g, cfg.max_plies)
            bar.update(sum(1 for g in active if g.termination))
            active = [g for g in active if not g.termination]
    finally:
        bar.close()
        if own:
            opponent.close()
    return [{"player": player.name, "level": g.level, "color": "white" if g.player_color else "black",
             "score": player_score(g), "termination": g.termination, "plies": g.board.ply(), "legal": g.legal,
             "illegal": g.illegal, "transcript": moves_to_transcript(g.board.move_stack)} for g in games]


def elo_estimate(opponent_elos: Sequence[float], scores: Sequence[float]) -> dict[str, Any]:
    """Maximum-likelihood Elo and its 95% likelihood-ratio interval (grid of 1 Elo over -1000..4000).
    ``bounded`` is False when the maximum is at the grid's edge (all wins or all losses): then only
    the interval's finite side means something."""
    if len(opponent_elos) == 0:
        return {"elo": None, "low": None, "high": None, "n_games": 0, "bounded": False}
    grid = np.arange(-1000.0, 4001.0)
    opp, s = np.asarray(opponent_elos, dtype=float), np.asarray(scores, dtype=float)
    expected = 1 / (1 + 10 ** ((opp[None, :] - grid[:, None]) / 400))
    expected = np.clip(expected, 1e-12, 1 - 1e-12)
    ll = (s * np.log(expected) + (1 - s) * np.log(1 - expected)).sum(1)
    best = int(ll.argmax())
    inside = grid[ll >= ll[best] - 1.92]
    bounded = 0 < best < len(grid) - 1
    return {"elo": float(grid[best]) if bounded else None, "low": float(inside.min()), "high": float(inside.max()),
            "n_games": int(len(s)), "bounded": bounded}


def summarize_games(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (player, level): win/draw/loss, failed tries, forfeits, mean length; then one row per
    player over all levels with its Elo estimate."""
    rows = []
    players = list(dict.fromkeys(r["player"] for r in records))
    for p in players:
        mine = [r for r in records if r["player"] == p]
        for level in list(dict.fromkeys(r["level"] for r in mine)) + ["all"]:
            rs = mine if level == "all" else [r for r in mine if r["level"] == level]
            tries = sum(r["legal"] + r["illegal"] for r in rs)
            row = {"player": p, "level": level, "games": len(rs),
                   "wins": sum(r["score"] == 1 for r in rs), "draws": sum(r["score"] == 0.5 for r in rs),
                   "losses": sum(r["score"] == 0 for r in rs), "forfeits": sum(r["termination"] == "forfeit" for r in rs),
                   "illegal_tries": sum(r["illegal"] for r in rs),
                   "illegal_rate": sum(r["illegal"] for r in rs) / tries if tries else 0.0,
                   "mean_plies": float(np.mean([r["plies"] for r in rs]))}
            if level == "all":
                rated = [r for r in rs if skill_elo(r["level"]) is not None]
                row["elo"] = elo_estimate([skill_elo(r["level"]) for r in rated], [r["score"] for r in rated])
            rows.append(row)
    return rows
