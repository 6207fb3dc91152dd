"""Capture overhead of the expert readers: a plain forward pass of a tiny random OLMoE (transformers) on
the CPU against the same pass with one layer's MoE captured (hook only), and with every expert's hidden
units recomputed (what probing reads). Prints ms and the ratios to the plain pass (goal: capture
<= 1.3x); ``--out`` saves JSON.

    python benchmarks/hf_capture.py [--out benchmarks/results/hf_capture_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch


def timed(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    import transformers

    from moex.interp.hf_readers import HFModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model("olmoe", vocab_size=1000, hidden_size=256, intermediate_size=512,
                                            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                            num_experts=8, num_experts_per_tok=2)
    hf = HFModel(transformers.AutoModelForCausalLM.from_config(cfg).float())
    idx = torch.randint(0, 1000, (4, 256))

    def plain():
        with torch.no_grad():
            hf.model(input_ids=idx)

    def units():
        cap = hf.capture(idx, 2)
        for e in range(cap.n_experts):
            cap.expert_units(e)

    res = {"plain_ms": timed(plain, args.reps), "capture_ms": timed(lambda: hf.capture(idx, 2), args.reps),
           "capture_and_units_ms": timed(units, args.reps)}
    res["capture_ratio"] = res["capture_ms"] / res["plain_ms"]
    res["capture_and_units_ratio"] = res["capture_and_units_ms"] / res["plain_ms"]
    for k, v in res.items():
        print(f"{k}: {v:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**{k: round(v, 4) for k, v in res.items()}, "transformers": transformers.__version__,
                       "torch": torch.__version__, "machine": platform.machine(),
                       "shape": "olmoe 4 layers, d 256, 8 x 512 experts top-2, batch 4 x 256 tokens",
                       "command": "python benchmarks/hf_capture.py " + " ".join(sys.argv[1:])}, f, indent=2)


if __name__ == "__main__":
    main()
