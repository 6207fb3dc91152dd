"""Legal-move rate: after a held-out game prefix, does the model write a legal next move? (METHODS sec 10)

A prefix ends where the next move's SAN begins: after ``k.`` when White is to move, after White's move and
its space when Black is. The model writes characters until a space or ``;`` (at most ``max_chars``); the
text is parsed as SAN on the prefix's board and is one of:
- legal: a legal move (``+``/``#`` suffixes are not checked, as python-chess parses them);
- illegal: well-formed SAN that is no legal move here, or names several (ambiguous);
- unparsable: anything else (empty, ``;``, not SAN; ``0000``, which python-chess reads as a null move).
As in the reference, SAN that python-chess accepts counts as legal even when over-specified (``Ngf3``).
Prefixes are cut at a uniformly random ply of each game, among the plies whose prompt leaves room for the
move in the model's context (the model never saw a game's later characters in training). The rate is
reported overall and by the prefix's move number (game phase), greedy and sampled, beside the rate of a
writer of uniformly random characters with the same stopping rule (what chance gives on the same boards).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import chess
import torch
from ..progress import progress_bar

from ..data.chess.transcript import move_spans
from ..data.chess.vocab import CHARS, STOI, decode, encode
from ..errors import MoexError
from ..model.generate import generate
from ..model.gpt import GPT

MOVE_END = " ;"  # a move ends at a space (the next move follows) or ';' (a new game)
MAX_MOVE_CHARS = 10  # longest SAN is 7 ("exd8=Q+", "Qh4xe1#"); room for one more character
PHASES = ((1, 10), (11, 20), (21, 30), (31, 10**6))
OUTCOMES = ("legal", "illegal", "unparsable")


class NotAChessModel(MoexError):
    """A model whose vocabulary is not the 32-character chess vocabulary."""


def check_chess_model(model: GPT, where: str = "model") -> None:
    if model.cfg.vocab_size != len(CHARS):
        raise NotAChessModel(f"{where} is not a chess model: its vocabulary has {model.cfg.vocab_size} entries, "
                             f"the chess vocabulary {len(CHARS)} ({CHARS!r})")


class MoveWriter(Protocol):
    """Writes the next move's text after each prompt; ``temperatures`` is one value per prompt."""

    def __call__(self, prompts: Sequence[str], temperatures: Sequence[float]) -> list[str]: ...


class ModelWriter:
    """A chess ``GPT`` writing moves: batched generation with a key-value cache, stopped at a space or ``;``."""

    def __init__(self, model: GPT, device: str | torch.device = "cpu", batch: int = 128, seed: int = 0,
                 max_chars: int = MAX_MOVE_CHARS):
        check_chess_model(model)
        self.model = model.to(device).eval()
        self.batch, self.max_chars = batch, max_chars
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.stop = {STOI[c] for c in MOVE_END}

    @property
    def max_prompt(self) -> int:
        return self.model.cfg.ctx - self.max_chars

    def __call__(self, prompts: Sequence[str], temperatures: Sequence[float]) -> list[str]:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        out: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch):
            rows = order[start:start + self.batch]
            ids = [encode(fit_prompt(prompts[i], self.max_prompt), where=f"prompt {i + 1}") for i in rows]
            new = generate(self.model, ids, self.max_chars, [temperatures[i] for i in rows], self.stop,
                           self.generator)
            for i, toks in zip(rows, new):
                out[i] = decode(toks)
        return out


class RandomCharWriter:
    """Uniformly random characters of the chess vocabulary until a space or ``;``: the chance baseline."""

    def __init__(self, seed: int = 0, max_chars: int = MAX_MOVE_CHARS):
        self.rng, self.max_chars = random.Random(seed), max_chars

    def __call__(self, prompts: Sequence[str], temperatures: Sequence[float]) -> list[str]:
        out = []
        for _ in prompts:
            text = ""
            while len(text) < self.max_chars:
                text += self.rng.choice(CHARS)
                if text[-1] in MOVE_END:
                    break
            out.append(text)
        return out


def fit_prompt(prompt: str, max_len: int) -> str:
    """A prompt longer than ``max_len`` characters keeps its end, from a move boundary, after a ``;``."""
    if len(prompt) <= max_len:
        return prompt
    tail = prompt[len(prompt) - max_len + 1:]
    cut = tail.find(" ")
    return ";" + (tail[cut + 1:] if cut >= 0 else tail)


def classify(board: chess.Board, text: str) -> tuple[str, chess.Move | None]:
    """(outcome, move) of the text a writer produced on ``board`` (the stop character removed)."""
    san = text.rstrip(MOVE_END)
    if not san or any(c in san for c in MOVE_END) or not (
            chess.SAN_REGEX.match(san) or san.rstrip("+#") in ("O-O", "O-O-O")):
        return "unparsable", None
    try:
        return "legal", board.parse_san(san)
    except (chess.IllegalMoveError, chess.AmbiguousMoveError):
        return "illegal", None
    except ValueError:  # chess.InvalidMoveError: not SAN
        return "unparsable", None


@dataclass
class Prefix:
    game: int
    ply: int  # the move to write is ply ``ply`` (0-based) of the game
    prompt: str
    fen: str
    answer: str  # the move the game went on with

    @property
    def move_number(self) -> int:
        return self.ply // 2 + 1


def sample_prefixes(games: Sequence[str], n: int, max_prompt: int, seed: int = 0) -> list[Prefix]:
    """``n`` prefixes: game i % len(games), cut at a uniformly random ply whose prompt fits ``max_prompt``."""
    rng = random.Random(seed)
    candidates = []  # per game: every move whose prompt fits
    for g, t in enumerate(games):
        sp, _ = move_spans(t, where=f"game {g + 1}")
        # a prompt runs up to the move's SAN: "k." before White's moves is part of it
        prompts = [(s, s.end - len(s.san)) for s in sp]
        candidates.append([Prefix(g, s.ply, t[:end], s.fen_before, s.san) for s, end in prompts if end <= max_prompt])
    usable = [c for c in candidates if c]
    if not usable:
        raise MoexError(f"no game has a move within the first {max_prompt} characters")
    return [rng.choice(usable[i % len(usable)]) for i in range(n)]


def rate_table(prefixes: Sequence[Prefix], outcomes: Sequence[str], matches: Sequence[bool]) -> dict[str, Any]:
    """Counts and rates of the outcomes, overall and by phase."""

    def summary(idx: list[int]) -> dict[str, Any]:
        n = len(idx)
        counts = {o: sum(outcomes[i] == o for i in idx) for o in OUTCOMES}
        return {"n": n, **counts, "legal_rate": counts["legal"] / n if n else None,
                "game_move_rate": sum(matches[i] for i in idx) / n if n else None}

    by_phase = {}
    for lo, hi in PHASES:
        idx = [i for i, p in enumerate(prefixes) if lo <= p.move_number <= hi]
        if idx:
            by_phase[f"moves {lo}-{hi}" if hi < 10**6 else f"moves {lo}+"] = summary(idx)
    return {**summary(list(range(len(prefixes)))), "by_phase": by_phase}


def score_writer(writer: MoveWriter, prefixes: Sequence[Prefix], temperature: float,
                 progress: bool = False) -> dict[str, Any]:
    chunk = 256
    texts: list[str] = []
    for lo in progress_bar(range(0, len(prefixes), chunk), desc=f"legal moves (T={temperature:g})", unit="chunk",
                   disable=not progress):
        part = prefixes[lo:lo + chunk]
        texts += writer([p.prompt for p in part], [temperature] * len(part))
    outcomes, matches = [], []
    for p, text in zip(prefixes, texts):
        board = chess.Board(p.fen)
        outcome, move = classify(board, text)
        outcomes.append(outcome)
        matches.append(outcome == "legal" and board.san(move) == p.answer)
    return {**rate_table(prefixes, outcomes, matches), "examples": [
        {"prompt_end": p.prompt[-24:], "wrote": t, "outcome": o} for p, t, o in list(zip(prefixes, texts, outcomes))[:5]]}


def legal_move_rate(model: GPT, games: Sequence[str], n: int = 1000, temperature: float = 1.0, seed: int = 0,
                    device: str | torch.device = "cpu", batch: int = 128, progress: bool = False) -> dict[str, Any]:
    """Legal-move rate of ``model`` on ``n`` prefixes of ``games`` (held-out transcripts): ``greedy``,
    ``sampled`` (at ``temperature``) and ``chance`` (random characters), each with counts, the rate by game
    phase and how often the move equals the game's own (``game_move_rate``)."""
    if n < 1:
        raise MoexError(f"n={n}: the number of prefixes must be at least 1")
    if temperature <= 0:
        raise MoexError(f"temperature={temperature}: must be > 0 (greedy is always reported)")
    writer = ModelWriter(model, device, batch, seed)
    prefixes = sample_prefixes(games, n, writer.max_prompt, seed)
    return {"n_prefixes": n, "n_games": len(games), "temperature": temperature, "seed": seed,
            "greedy": score_writer(writer, prefixes, 0.0, progress),
            "sampled": score_writer(writer, prefixes, temperature, progress),
            "chance": score_writer(RandomCharWriter(seed), prefixes, 1.0)}

