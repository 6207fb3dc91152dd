"""Game transcripts: ``;1.e4 e5 2.Nf3 Nc6 ...`` (SAN, no space after a move number, no result).

One parser and one writer, shared by import, self-play and the board-state labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import chess

from ...errors import MoexError

_MOVE_NUMBER = re.compile(r"^\d+\.")


class TranscriptError(MoexError):
    """A transcript that does not replay: unparsable or illegal move."""


def moves_to_transcript(moves: Iterable[chess.Move], board: chess.Board | None = None) -> str:
    """Moves from the initial position -> transcript (with the leading ``;``)."""
    board = board or chess.Board()
    parts = []
    for move in moves:
        san = board.san(move)
        if board.turn == chess.WHITE:
            parts.append(f"{board.fullmove_number}.{san}")
        else:
            parts.append(san)
        board.push(move)
    return ";" + " ".join(parts)


def transcript_sans(transcript: str) -> list[str]:
    """The SAN tokens of a transcript, move numbers removed."""
    body = transcript[1:] if transcript.startswith(";") else transcript
    out = []
    for tok in body.split():
        tok = _MOVE_NUMBER.sub("", tok)
        if tok:
            out.append(tok)
    return out


def replay(transcript: str, where: str = "transcript") -> Iterator[chess.Board]:
    """Yield the board after each ply (the same Board object, mutated). Raises ``TranscriptError``."""
    board = chess.Board()
    for ply, san in enumerate(transcript_sans(transcript)):
        try:
            board.push_san(san)
        except ValueError as e:
            raise TranscriptError(f"{where}: move {ply // 2 + 1}{'.' if ply % 2 == 0 else '...'}{san}: {e}") from None
        yield board


def canonical(transcript: str, where: str = "transcript") -> str:
    """Re-write a transcript from its replayed moves (normalises SAN; raises on illegal moves)."""
    moves = [b.peek() for b in replay(transcript, where)]
    return moves_to_transcript(moves)


@dataclass
class MoveSpan:
    """One move of a transcript: its characters ``[start, end)`` (with a leading move number), the move and
    the board before it."""

    start: int
    end: int
    ply: int
    san: str
    uci: str
    fen_before: str


def move_spans(transcript: str, where: str = "transcript") -> tuple[list[MoveSpan], str]:
    """Every move's character span and the board before it, and the FEN after the last move: which move a
    character belongs to (a character between moves belongs to the next one)."""
    spans: list[MoveSpan] = []
    board = chess.Board()
    pos = 1 if transcript.startswith(";") else 0
    for tok in transcript[pos:].split(" "):
        start, end = pos, pos + len(tok)
        pos = end + 1
        san = _MOVE_NUMBER.sub("", tok)
        if not san:
            continue
        fen = board.fen()
        try:
            move = board.push_san(san)
        except ValueError as e:
            raise TranscriptError(f"{where}: move {len(spans) // 2 + 1}{'.' if len(spans) % 2 == 0 else '...'}"
                                  f"{san}: {e}") from None
        spans.append(MoveSpan(start, end, len(spans), san, move.uci(), fen))
    return spans, board.fen()


def distinct_openings(transcripts: list[str], plies: int = 2) -> int:
    """How many different first ``plies`` half-moves the games open with (``;1.e4 e5`` is one opening of 2)."""
    return len({tuple(t.split(" ")[:plies]) for t in transcripts})
