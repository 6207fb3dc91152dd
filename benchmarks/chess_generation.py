"""Generation with the key-value cache against the plain loop, and the legal-move rate's wall time.

    python benchmarks/chess_generation.py --out benchmarks/results/chess_generation_cpu.json

1. 200-character greedy continuations of chess prompts by the ``tiny`` model (4 layers, d 128, ctx 255),
   batch of ``--batch`` prompts: ``generate`` with the cache against ``use_cache=False`` (the whole sequence
   recomputed every step), same model, same prompts, same process; the outputs must be equal.
   Target: cached >= 5x the loop.
2. ``legal_move_rate`` of the tiny model on 1,000 prefixes of held-out games (greedy, sampled and the
   chance writer). Target: under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from moex.data.chess.selfplay import SelfPlayConfig, generate_games
from moex.data.chess.vocab import encode
from moex.eval.legal_moves import legal_move_rate
from moex.model import GPT, make_config
from moex.model.generate import generate


def timed(fn, reps: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new", type=int, default=200, help="characters to generate")
    ap.add_argument("--prefixes", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = GPT(make_config("tiny", "gelu")).eval()
    games = generate_games(100, Path(os.environ.get("TMPDIR", "/tmp")) / "moex-bench-games",
                           SelfPlayConfig(engine="random"), seed=0, progress=False)
    from moex.data.chess.importer import read_games

    transcripts = read_games(games)
    prompts = [encode(t[:40]).tolist() for t in transcripts[: args.batch]]
    t_cache, a = timed(lambda: generate(model, prompts, args.new), args.reps)
    t_loop, b = timed(lambda: generate(model, prompts, args.new, use_cache=False), args.reps)
    assert a == b, "cached and uncached generation disagree"
    t0 = time.perf_counter()
    res = legal_move_rate(model, transcripts, n=args.prefixes)
    t_rate = time.perf_counter() - t0
    result = {
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": sys.version.split()[0],
        "generation": {"batch": args.batch, "new_chars": args.new, "cached_s": round(t_cache, 3),
                       "loop_s": round(t_loop, 3), "speedup": round(t_loop / t_cache, 2), "target": ">= 5"},
        "legal_move_rate": {"prefixes": args.prefixes, "seconds": round(t_rate, 2), "target_s": 60,
                            "greedy_rate": res["greedy"]["legal_rate"]},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
