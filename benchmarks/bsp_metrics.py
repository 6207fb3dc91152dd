"""Time and peak memory of coverage + reconstruction: 4096 features x 768 BSPs x 11 thresholds x 20,000 positions.

    python benchmarks/bsp_metrics.py [--device cpu|cuda] [--out benchmarks/results/bsp_metrics_cpu.json]

Reports wall time and peak resident memory next to the size of the input features.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from moex.interp.bsp import bsp_metrics


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--positions", type=int, default=20_000)
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--out", default="benchmarks/results/bsp_metrics_cpu.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    P, n, G = args.positions, args.features, 768
    labels = rng.random((P, G)) < 0.04
    feats = np.where(rng.random((P, n), dtype=np.float32) < 0.9, 0.0, rng.random((P, n), dtype=np.float32))
    train = np.arange(P) < P // 2
    rss0 = peak_rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    r = bsp_metrics(feats, labels, train, device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    res = {
        "command": f"python benchmarks/bsp_metrics.py --device {args.device}",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "positions": P, "features": n, "bsps": G, "thresholds": 11,
        "seconds": round(dt, 2), "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(rss0, 1),
        "input_mb": round(feats.nbytes / 2**20, 1),
        "coverage": r.coverage, "reconstruction": r.reconstruction,
    }
    if args.device.startswith("cuda"):
        res["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(res, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
