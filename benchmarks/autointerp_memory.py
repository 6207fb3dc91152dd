"""Peak memory of the activation cache and the example sampling as the corpus grows: the same pipeline
(GPT-2 tokens streamed from a text file, rows of the tiny-lm context, 10 features cached sparsely, window
statistics, a few windows loaded) on N and 10 N tokens, each in a fresh process. Prints both peak RSS and
their difference (goal: a constant, not 10x); ``--out`` saves JSON.

    python benchmarks/autointerp_memory.py [--tokens 50000] [--out benchmarks/results/autointerp_memory_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import resource, sys, tempfile, torch
from moex import GPT, make_config
from moex.autointerp.cache import cache_activations, iter_rows
from moex.autointerp.pipeline import iter_text_tokens
from moex.interp.sites import site_for
torch.manual_seed(0)
model = GPT(make_config("tiny-lm", "moex", n_layer=1)).eval()
site = site_for(model, "mlp", layer=0)
rows = iter_rows(iter_text_tokens([sys.argv[1]], int(sys.argv[2])), model.cfg.ctx, 50256)
with tempfile.TemporaryDirectory() as d:
    cache = cache_activations(site, rows, list(range(0, 4000, 400)), d, batch=8, progress=False)
    for f in cache.features:
        m, nz = cache.window_stats(f, 32)
        cache.load_windows(f, m.argsort()[-20:], 32)
    print(cache.n_rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=50_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "of", "moex", "expert", "router", "sparse", "chess", "board",
             "king", "queen", "1.e4", "and", "then", "it", "was"]
    res = {}
    with tempfile.TemporaryDirectory() as d:
        text = Path(d) / "corpus.txt"
        with open(text, "w") as f:  # about 1.3 GPT-2 tokens a word: enough for 10 N tokens
            for _ in range(args.tokens * 10 // 8 + 1000):
                f.write(" ".join(rng.choice(words) for _ in range(8)) + "\n")
        for n in (args.tokens, 10 * args.tokens):
            r = subprocess.run([sys.executable, "-c", CHILD, str(text), str(n)], capture_output=True, text=True,
                               check=True)
            rows, kb = map(int, r.stdout.split())
            res[n] = {"rows": rows, "peak_rss_mb": round(kb / 1024, 1)}
            print(f"{n:>9} tokens: {rows} rows, peak RSS {kb / 1024:.1f} MB", flush=True)
    small, large = res[args.tokens]["peak_rss_mb"], res[10 * args.tokens]["peak_rss_mb"]
    print(f"10x the corpus adds {large - small:.1f} MB of peak RSS ({large / small:.2f}x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"runs": res, "added_mb": round(large - small, 1), "ratio": round(large / small, 3),
                       "machine": platform.machine(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "command": "python benchmarks/autointerp_memory.py " + " ".join(sys.argv[1:])}, f, indent=2)


if __name__ == "__main__":
    main()
