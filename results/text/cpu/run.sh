#!/usr/bin/env bash
# Paper two's central comparison at CPU scale: tiny language models, dense vs MoE with top-1/2/4 of 8 experts
# (activated parameters matched: d_expert = d_mlp / top_k) and MoE-X, trained on real text with a 4,096-entry
# BPE learned on the training text, then perplexity on held-out text and k-sparse part-of-speech probing of
# dense vs expert neurons. Run from the repository root (one thread; resumable: rerun the same command):
#   bash results/text/cpu/run.sh ../shared/data/text WORKDIR [STEPS]
set -euo pipefail
text=${1:?directory with wikitext-2-*.txt, tiny-shakespeare.txt and ud-english-ewt/}; work=${2:-/tmp/moex-text-cpu}
steps=${3:-1000}
out=$(dirname "$0")
mkdir -p "$work"
train_text=("$text/wikitext-2-valid.txt" "$text/tiny-shakespeare.txt")  # wikitext-2-test.txt is held out
[ -f "$work/bpe/tokenizer.json" ] || moex data text tokenizer "${train_text[@]}" --out "$work/bpe" --vocab-size 4096
[ -f "$work/data/meta.json" ] || moex data text build "${train_text[@]}" --out "$work/data" --block 256 \
    --val-fraction 0.05 --tokenizer "$work/bpe" --workers 1
common=(vocab_size=4096 max_steps=$steps batch_size=16 lr=2e-3 min_lr=2e-4 warmup_steps=50 eval_interval=250
        eval_batches=20 log_interval=25 ckpt_interval=250 device=cpu)
declare -A mlp=([dense]=gelu [top1]=switch [top2]=switch [top4]=switch [moex]=moex)
declare -A extra=([dense]="" [top1]=moe_top_k=1 [top2]=moe_top_k=2 [top4]=moe_top_k=4 [moex]="")
for name in dense top1 top2 top4 moex; do
    run="$work/runs/$name"
    if [ -d "$run" ] && ls "$run"/ckpt-* >/dev/null 2>&1; then
        [ -f "$run/done" ] || /usr/bin/time -o "$run/train.time.txt" moex --threads 1 train --resume "$run"
    else
        /usr/bin/time -o "$work/$name.time.txt" moex --threads 1 train --preset tiny-lm --mlp "${mlp[$name]}" \
            --data "$work/data" --out "$run" "${common[@]}" ${extra[$name]}
        mv "$work/$name.time.txt" "$run/train.time.txt"
    fi
    touch "$run/done"
    [ -f "$work/probe/$name/probe.json" ] || moex --threads 1 probe --model "$run" \
        --conllu "$text/ud-english-ewt/en_ewt-ud-dev.conllu" --out "$work/probe/$name"
done
moex --threads 1 eval ppl --checkpoint "$work"/runs/{dense,top1,top2,top4,moex} --data "$text/wikitext-2-test.txt" \
    --out "$out/ppl.json"
moex probe --compare "$work"/probe/{dense,top1,top2,top4,moex} --out "$out"
for name in top1 top2 top4 moex; do  # expert-level analysis, offline: the token baseline of every expert
    moex --threads 1 experts --model "$work/runs/$name" --data "$text/wikitext-2-test.txt" --layers 0 1 2 3 \
        --out "$work/experts/$name"
    mkdir -p "$out/experts/$name" && cp "$work/experts/$name"/experts.{json,md,png} "$out/experts/$name/"
done
python "$out/experts_table.py" "$out/experts"
for name in dense top1 top2 top4 moex; do
    mkdir -p "$out/runs/$name" "$out/probe/$name"
    cp "$work/runs/$name"/{cfg.json,train.json,metrics.csv,tokenizer.json,train.time.txt} "$out/runs/$name/"
    cp "$work/probe/$name"/probe.{json,md} "$out/probe/$name/"
done
# float16 weights of the dense model only (the committed checkpoints stay under 20 MB)
python "$(dirname "$0")/../half_copies.py" "$work/runs/dense" "$out/runs/dense"
