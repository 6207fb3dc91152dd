#!/usr/bin/env bash
# Run HERE (not on the device), once per checkout: fetch what the device image lacks into git-ignored
# folders that each device call carries (`carry: [".whl", ".sf"]`): python-chess and zstandard wheels for
# Python 3.12, and Debian's Stockfish package (self-play for part B). See benchmarks/GPU.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl .sf && mkdir -p .whl .sf
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl chess zstandard
(cd .sf && apt-get download stockfish >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get download stockfish))
ls -la .whl .sf
du -sh .whl .sf
