#!/usr/bin/env bash
# Part B (science), one device call per group of rows: `moex experiment chess --scale gpu-budget` on the
# rows of GROUP (1: the upcycled family with its own dense parent, the SAE and the router analysis;
# 2: the rows trained from scratch). Games are generated inside the call on all cores (the same seed gives
# the same games in both groups). Writes to $OUT: results.json, the tables, router.png, rows.tgz, log.
# Usage: bash benchmarks/gpu/part_b.sh 1|2
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/gpu/env.sh
case "${1:-1}" in
  1) ROWS="gelu switch moex-gelu-sparsity moex-relu-linear moex dense-continued sae" ;;
  2) ROWS="relu geglu solu monet-hd monet-vd peer moex-scratch" ;;
  *) echo "group must be 1 or 2"; exit 2 ;;
esac
WORK=${WORK:-/tmp/chess-gpu}
if [ "${MOEX_DRY_RUN:-0}" = 1 ]; then
  SCALE="--scale tiny steps=4 up_steps=2 games=40 eval_games=12 sae_steps=5 sae_width=128"; ROWS="gelu moex"
else
  SCALE="--scale gpu-budget"
fi
python3 -m moex.cli experiment chess $SCALE --out "$WORK" --workers 0 --only $ROWS 2>&1 | tee "$OUT/experiment.log"
cp "$WORK"/results.json "$WORK"/*.md "$OUT"/ 2>/dev/null
cp "$WORK"/router.png "$OUT"/ 2>/dev/null
tar czf "$OUT/rows.tgz" -C "$WORK" rows experiment.json
ls -la "$OUT"
