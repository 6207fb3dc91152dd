"""Chess data throughput on this machine: PGN import games/s, self-play games/s, labelling positions/s.

    python benchmarks/chess_data.py [--pgn FILE.pgn] [--games 16] [--out benchmarks/results/chess_data_cpu.json]

Without --pgn it writes a PGN of random self-play games first (so it runs without ../shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import chess
import chess.pgn

from moex.data.chess.importer import import_games, read_games
from moex.data.chess.labels import board_labels
from moex.data.chess.selfplay import SelfPlayConfig, find_stockfish, generate_games
from moex.data.chess.transcript import replay


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pgn", help="a PGN file to import (default: ../shared/data/chess/Tal.pgn if present)")
    ap.add_argument("--games", type=int, default=16, help="self-play games per measurement")
    ap.add_argument("--out", default="benchmarks/results/chess_data_cpu.json")
    args = ap.parse_args()
    workers = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp())
    res: dict = {"machine": platform.processor() or platform.machine(), "cpus": workers,
                 "command": "python benchmarks/chess_data.py " + " ".join(
                     f"--{k} {v}" for k, v in vars(args).items() if v is not None)}

    pgn = Path(args.pgn) if args.pgn else Path(__file__).resolve().parents[2] / "shared/data/chess/Tal.pgn"
    if not pgn.exists():
        games = generate_games(400, tmp / "rnd", SelfPlayConfig(engine="random"), progress=False)
        pgn = tmp / "random.pgn"
        with open(pgn, "w") as f:
            for t in read_games(games):
                g = chess.pgn.Game.from_board(list(replay(t))[-1])
                print(g, file=f, end="\n\n")
    for w in (1, workers):
        rep, dt = timed(lambda: import_games([pgn], tmp / f"imp{w}", workers=w, progress=False))
        n = rep.imported + len(rep.skipped)
        res[f"import_games_per_s_{w}_workers"] = round(n / dt, 1)
    res["import_source"] = pgn.name

    for engine in ("random", "stockfish"):
        if engine == "stockfish" and find_stockfish() is None:
            res["stockfish"] = "not installed"
            continue
        cfg = SelfPlayConfig(engine=engine)
        for w in (1, workers):
            path, dt = timed(lambda: generate_games(args.games, tmp / f"{engine}{w}", cfg, seed=0, workers=w,
                                                    progress=False))
            chars = sum(len(t) for t in read_games(path))
            res[f"{engine}_games_per_s_{w}_workers"] = round(args.games / dt, 2)
            res[f"{engine}_chars_per_s_{w}_workers"] = round(chars / dt)
        res[f"{engine}_games_per_s_per_worker"] = round(res[f"{engine}_games_per_s_{workers}_workers"] / workers, 2)

    games = read_games(tmp / "imp1" / "games.txt")[:2000]
    labels, dt = timed(lambda: board_labels(games))
    res["label_positions_per_s"] = round(len(labels.game) / dt)
    res["label_positions"] = int(len(labels.game))
    print(json.dumps(res, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
