"""Cost of the activation cache against a plain forward pass of the ``tiny-lm`` model on the CPU: the same
rows (the context, BOS first) through ``model(idx)``, and through ``cache_activations`` (the site's features,
the activating rule, sparse chunks written to disk) for 100 features. Prints both and the ratio (goal:
at most 1.2x), and against computing the site's features alone (the cost of the caching machinery:
rule, sparse extraction, writing); ``--out`` saves JSON.

    python benchmarks/autointerp_cache.py [--mlp moex] [--out benchmarks/results/autointerp_cache_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time

import torch


def main() -> None:
    from moex import GPT, make_config
    from moex.autointerp.cache import cache_activations, iter_rows
    from moex.interp.sites import site_for

    ap = argparse.ArgumentParser()
    ap.add_argument("--mlp", default="moex")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = GPT(make_config("tiny-lm", args.mlp)).eval()
    rows = list(iter_rows(torch.randint(0, 50256, (args.rows * 254,)).tolist(), model.cfg.ctx, 50256))
    site = site_for(model, "mlp", layer=3)  # the last layer: the cache runs (almost) the whole model too
    features = list(range(0, site.width, site.width // 100))[:100]

    def plain():
        with torch.no_grad():
            for lo in range(0, len(rows), args.batch):
                model(torch.tensor(rows[lo:lo + args.batch]))

    def site_only():
        with torch.no_grad():
            for lo in range(0, len(rows), args.batch):
                site.features(torch.tensor(rows[lo:lo + args.batch]))

    def cached():
        with tempfile.TemporaryDirectory() as d:
            cache_activations(site, rows, features, d, rule="nonzero", batch=args.batch, progress=False)

    times = {}
    for name, fn in (("plain_forward_s", plain), ("site_features_s", site_only), ("cache_s", cached)):
        fn()
        t0 = time.perf_counter()
        for _ in range(args.reps):
            fn()
        times[name] = (time.perf_counter() - t0) / args.reps
    times["ratio"] = times["cache_s"] / times["plain_forward_s"]
    times["ratio_to_site_features"] = times["cache_s"] / times["site_features_s"]  # the caching machinery alone
    print(json.dumps({k: round(v, 4) for k, v in times.items()}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**{k: round(v, 4) for k, v in times.items()}, "mlp": args.mlp, "rows": len(rows),
                       "tokens": len(rows) * model.cfg.ctx, "features": len(features), "torch": torch.__version__,
                       "machine": platform.machine(),
                       "command": "python benchmarks/autointerp_cache.py " + " ".join(sys.argv[1:])}, f, indent=2)


if __name__ == "__main__":
    main()
