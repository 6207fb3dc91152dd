"""Time to build a 4096-feature browser site (``moex browse``) on chess games, against the model's plain
forward pass over the same games measured in the same run (what any reading of the features costs at
least). The model: the ``tiny`` backbone with MoE-X 8 x 512 experts (4096 features of the wide code), random
weights unless ``--checkpoint`` is given; games: ``--games`` or random self-play. Goal: under a minute on
the 2-core machine. Prints the seconds, the ratio, and the site's size; ``--out`` saves JSON.

    python benchmarks/browse_site.py [--games GAMES.txt] [--n-games 200] [--out benchmarks/results/browse_site_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from moex import GPT, make_config
    from moex.browse.build import BrowseConfig, build_site
    from moex.data.chess.importer import read_games
    from moex.data.chess.selfplay import SelfPlayConfig, generate_games
    from moex.data.chess.vocab import encode

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="a moex chess run (default: a random-weight tiny MoE-X, 4096 features)")
    ap.add_argument("--games", help="games.txt (default: random self-play)")
    ap.add_argument("--n-games", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.games:
            games_path = Path(args.games)
        else:
            generate_games(args.n_games, tmp / "games", SelfPlayConfig(engine="random"), seed=0, progress=False)
            games_path = tmp / "games" / "games.txt"
        if args.checkpoint:
            run = Path(args.checkpoint)
        else:
            torch.manual_seed(0)
            run = tmp / "run"
            GPT(make_config("tiny", "moex", n_layer=4)).save_pretrained(run)
        model = GPT.from_pretrained(run).eval()
        games = read_games(games_path)[: args.n_games]
        n = min(256, model.cfg.ctx)
        rows = [torch.as_tensor(encode(g[:n]).astype("int64")) for g in games]

        def plain() -> None:
            with torch.no_grad():
                for lo in range(0, len(rows), 32):
                    batch = torch.nn.utils.rnn.pad_sequence(rows[lo:lo + 32], batch_first=True)
                    model(batch)

        plain()
        t0 = time.perf_counter()
        plain()
        forward_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = build_site(run, tmp / "site", games=games_path, cfg=BrowseConfig(n_games=args.n_games), progress=False)
        build_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (tmp / "site").rglob("*") if p.is_file())
    res = {"build_s": round(build_s, 2), "plain_forward_s": round(forward_s, 3), "ratio": round(build_s / forward_s, 1),
           "features": rec["width"], "games": rec["rows"], "tokens": rec["tokens"], "layer": rec["layer"],
           "site_mb": round(size / 2**20, 1), "goal_s": 60, "met": build_s < 60,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(res))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**res, "torch": torch.__version__, "machine": platform.machine(),
                       "threads": torch.get_num_threads(),
                       "command": "python benchmarks/browse_site.py " + " ".join(sys.argv[1:])}, f, indent=2)


if __name__ == "__main__":
    main()
