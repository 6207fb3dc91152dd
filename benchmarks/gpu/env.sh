# Sourced by part_a.sh / part_b.sh: the carried wheels and Stockfish, moex from the working tree.
# MOEX_DRY_RUN=1: the same scripts at CPU size on this machine (tests/test_gpu_campaign.py).
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ "${MOEX_DRY_RUN:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "carried wheels did not install"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if [ -d .sf ] && ls .sf/*.deb >/dev/null 2>&1 && ! command -v stockfish >/dev/null; then
  for f in .sf/*.deb; do dpkg -x "$f" /tmp/sf; done
  export PATH=/tmp/sf/usr/games:$PATH
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/.gpu-out}
mkdir -p "$OUT"
python3 -c "import torch, moex.model.moe as m; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'grouped matmul:', m.GROUPED_MM_NAME)"
