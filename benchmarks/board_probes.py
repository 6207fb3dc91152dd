"""Linear board probes: moex's joint torch L-BFGS fit against scikit-learn's per-square logistic regression.

    python benchmarks/board_probes.py --out benchmarks/results/board_probes_cpu.json

The issue's shape: 20,000 positions (half fit, half test) x 512 dimensions x 64 squares of 13 classes.
Features: each position's one-hot board (832) through a fixed random projection to 512 dimensions plus
noise (linearly decodable, as a trained model's residual stream should be), boards from random self-play
games. moex fits all 64 squares at once (``probe_layer``, which also fits the 768 piece-BSP probes);
scikit-learn fits one multinomial ``LogisticRegression`` per square (lbfgs), timed on ``--sk-squares``
squares and scaled to 64 (the per-square fits are alike). Both report test accuracy on the squares they
fitted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from moex.data.chess.importer import read_games
from moex.data.chess.labels import board_labels
from moex.data.chess.selfplay import SelfPlayConfig, generate_games
from moex.interp.board_probes import probe_layer, subset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--games", type=int, default=1000, help="20 positions each")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--sk-squares", type=int, default=8)
    ap.add_argument("--out")
    args = ap.parse_args()
    path = generate_games(args.games, Path(os.environ.get("TMPDIR", "/tmp")) / f"moex-bench-probes-{args.games}",
                          SelfPlayConfig(engine="random", max_plies=120), seed=0, progress=False)
    games = read_games(path)
    labels = board_labels(games, 256)
    n = len(labels.game)
    g = torch.Generator().manual_seed(0)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(labels.state.reshape(n, 64), dtype=torch.long), 13)
    proj = torch.randn(64 * 13, args.dim, generator=g) / 8
    x = onehot.reshape(n, -1).float() @ proj + 0.3 * torch.randn(n, args.dim, generator=g)
    train = labels.game < len(games) // 2
    tr, te, t = subset(labels, train), subset(labels, ~train), torch.as_tensor(train)

    t0 = time.perf_counter()
    ours = probe_layer(x[t], x[~t], tr, te)
    t_ours = time.perf_counter() - t0

    from sklearn.linear_model import LogisticRegression

    xtr, xte = x[t].numpy(), x[~t].numpy()
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    st_tr, st_te = tr.state.reshape(-1, 64), te.state.reshape(-1, 64)
    right, t0 = 0, time.perf_counter()
    for sq in range(args.sk_squares):
        clf = LogisticRegression(max_iter=200).fit(xtr, st_tr[:, sq])
        right += int((clf.predict(xte) == st_te[:, sq]).sum())
    t_sk = (time.perf_counter() - t0) * 64 / args.sk_squares
    result = {
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "positions": n, "dim": args.dim,
        "moex_torch_lbfgs": {"seconds": round(t_ours, 1), "state_accuracy": round(ours["state_accuracy"], 4),
                             "note": "64 square probes and 768 piece-BSP probes"},
        "sklearn_per_square": {"seconds_for_64_squares": round(t_sk, 1), "squares_timed": args.sk_squares,
                               "state_accuracy": round(right / (len(st_te) * args.sk_squares), 4),
                               "note": "square probes only; time scaled from the squares timed"},
        "speedup": round(t_sk / t_ours, 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
