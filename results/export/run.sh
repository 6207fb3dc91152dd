#!/usr/bin/env bash
# The committed CPU chess models and text model exported to transformers and checked on real master games and WikiText-2.
# usage: bash results/export/run.sh ../shared/data WORK
set -euo pipefail
DATA=$1; WORK=$2
moex data chess import "$DATA"/chess/*.pgn --out "$WORK/games"
python results/export/check_export.py "$WORK/games/games.txt" "$DATA/text/wikitext-2-test.txt" "$WORK" results/export
