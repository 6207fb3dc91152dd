"""Peak memory of ``moex browse`` against the number of games: ``benchmarks/browse_site.py`` run in a fresh
process for each game count (its peak RSS), the ratio against the smallest; the issue's bound: 200 against
1,000 games within 1.2x.

    python benchmarks/browse_memory.py --checkpoint results/chess/cpu/runs/moex --games EVAL.txt \
        --out benchmarks/results/browse_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--games")
    ap.add_argument("--n-games", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for n in args.n_games:
        cmd = [sys.executable, str(Path(__file__).parent / "browse_site.py"), "--n-games", str(n)]
        cmd += ["--checkpoint", args.checkpoint] if args.checkpoint else []
        cmd += ["--games", args.games] if args.games else []
        rec = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append({k: rec[k] for k in ("games", "tokens", "build_s", "peak_rss_mb")})
        print(json.dumps(rows[-1]))
    for r in rows:
        r["rss_vs_first"] = round(r["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)
    res = {"rows": rows, "bound": 1.2, "met": all(r["rss_vs_first"] <= 1.2 for r in rows),
           "command": "python benchmarks/browse_memory.py " + " ".join(sys.argv[1:])}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
