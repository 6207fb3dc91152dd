#!/usr/bin/env bash
# Part A (speed), one device call of at most 5 minutes: GPU tests, the training step of dense GELU
# (D=4096), Switch and MoE-X (8 x 2048, top-2) at the chess shape (8 layers, d 512, ctx 1023, batch 100,
# bf16) eager and compiled, grouped and loop dispatch, and the BSP metric benchmark on CUDA.
# Writes to $OUT: gpu_tests.log, train_step.json/.log, bsp_metrics.json/.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/gpu/env.sh
if [ "${MOEX_DRY_RUN:-0}" = 1 ]; then
  DEV=cpu; STEP_ARGS="--shape small --batch 2 --steps 1 --warmup 1"; BSP_ARGS="--positions 2000 --features 256"
  VARIANTS=eager-grouped,eager-loop
else
  DEV=cuda; STEP_ARGS="--shape chess --batch 100 --steps 10 --warmup 3"; BSP_ARGS="--positions 20000 --features 4096"
  VARIANTS=eager-grouped,compiled-grouped,eager-loop,compiled-loop
fi
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 benchmarks/train_step.py --device $DEV $STEP_ARGS --variants $VARIANTS --out "$OUT/train_step.json" \
  2>&1 | tee "$OUT/train_step.log"
python3 benchmarks/bsp_metrics.py --device $DEV $BSP_ARGS --out "$OUT/bsp_metrics.json" 2>&1 | tee "$OUT/bsp_metrics.log"
ls -la "$OUT"
