#!/usr/bin/env bash
# The cpu scale of `moex experiment chess`: GELU dense, Switch and MoE-X upcycled from it, dense continued and
# MoE-X from scratch, trained on the master games of shared/data (one thread), each row scored on 400 held-out
# master games it never saw (coverage, reconstruction, legal-move rate on 1,000 prefixes, board probes).
# Run from the repository root; resumable (rerun the same command):
#   bash results/chess/cpu/run.sh ../shared/data/chess WORKDIR
set -euo pipefail
pgns=${1:?directory of the master-game PGNs}; work=${2:-/tmp/moex-chess-cpu}
out=$(dirname "$0")
mkdir -p "$work"
[ -f "$work/games/games.txt" ] || moex data chess import "$pgns"/*.pgn --out "$work/games"
[ -f "$work/eval.txt" ] || python - "$work" <<'PY'
import random, sys, os
work = sys.argv[1]
lines = open(f"{work}/games/games.txt").read().splitlines()
random.Random(0).shuffle(lines)                      # 1,000 held-out games, the rest for training
os.makedirs(f"{work}/train", exist_ok=True)
open(f"{work}/train/games.txt", "w").write("\n".join(lines[1000:]) + "\n")
open(f"{work}/eval.txt", "w").write("\n".join(lines[:1000]) + "\n")
PY
/usr/bin/time -a -o "$work/experiment.time.txt" moex --threads 1 experiment chess --scale cpu --out "$work/exp" \
    --games "$work/train" --eval-games "$work/eval.txt" --device cpu
cp "$work"/exp/{results.json,table1.md,table3.md,table4.md,experiment.json} "$out/" 2>/dev/null || true
cp "$work"/exp/router.png "$out/" 2>/dev/null || true
for row in gelu switch moex dense-continued moex-scratch; do
    mkdir -p "$out/runs/$row"
    cp "$work/exp/runs/$row"/{cfg.json,train.json,metrics.csv} "$out/runs/$row/"
done
# float16 weights of the dense model and the upcycled MoE-X only (the committed checkpoints stay under 20 MB)
python "$(dirname "$0")/../half_copies.py" "$work/exp/runs/gelu" "$out/runs/gelu" "$work/exp/runs/moex" "$out/runs/moex"
cp "$work/experiment.time.txt" "$out/"
