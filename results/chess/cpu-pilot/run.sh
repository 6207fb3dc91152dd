#!/usr/bin/env bash
# A pilot for the CPU scale: the tiny GELU (4 layers, d 128, ctx 255) trained on real master games, then
# `moex eval chess` on 1,000 held-out master games it never saw. Run from the repository root:
#   bash results/chess/cpu-pilot/run.sh ../shared/data/chess WORKDIR
set -euo pipefail
pgns=${1:?directory of the master-game PGNs}; work=${2:-/tmp/moex-cpu-pilot}
out=$(dirname "$0")
mkdir -p "$work" && cd "$work"
moex data chess import "$pgns"/*.pgn --out games
python - <<'PY'
import random
lines = open("games/games.txt").read().splitlines()
random.Random(0).shuffle(lines)                      # 1,000 held-out games, the rest for training
open("eval.txt", "w").write("\n".join(lines[:1000]) + "\n")
import os; os.makedirs("train", exist_ok=True)
open("train/games.txt", "w").write("\n".join(lines[1000:]) + "\n")
PY
moex data chess build train/games.txt --out blocks --block 256 --val-fraction 0.02
moex --threads 1 train --preset tiny --mlp gelu --data blocks --out runs/gelu max_steps=3000 batch_size=16 \
    lr=1e-3 min_lr=1e-4 warmup_steps=100 eval_interval=500 ckpt_interval=500 log_interval=50 device=cpu
cd - >/dev/null
moex eval chess --checkpoint "$work/runs/gelu" --games "$work/eval.txt" --n-games 400 --out "$out" \
    play=true levels=[0,1,3] games=4 movetime=0.05
# the same backbone untrained (random weights, seed 0), for the probes' and the legal-move rate's floor
python -c "import torch; from moex import GPT, make_config; torch.manual_seed(0); GPT(make_config('tiny', 'gelu')).save_pretrained('$work/untrained')"
moex eval chess --checkpoint "$work/untrained" --games "$work/eval.txt" --n-games 400 --out "$out/untrained"
mkdir -p "$out/run" && cp "$work"/runs/gelu/{cfg.json,train.json,metrics.csv,model.safetensors} "$out/run/"
