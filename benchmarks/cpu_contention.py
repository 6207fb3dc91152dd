"""Training-step time of a tiny Switch model on the CPU, idle and with one core kept busy by another
process: OpenMP's default wait (a long spin), the passive policy, the short spin the ``moex`` CLI sets
(``moex.cli.CPU_WAIT``), and one thread.

Each case runs in a fresh process (the wait policy is read when torch starts its thread pool). Prints
seconds per step and the ratios against the default policy in the same run; ``--out`` saves JSON.

    python benchmarks/cpu_contention.py [--steps 10] [--out benchmarks/results/cpu_contention.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time

STEP = r"""
import time, torch
from moex import GPT, make_config
from moex.training.trainer import make_optimizer
from moex.training.config import TrainConfig
torch.manual_seed(0)
if {threads}:
    torch.set_num_threads({threads})
model = GPT(make_config("tiny", "switch"))
opt = make_optimizer(model, TrainConfig(), torch.device("cpu"))
x = torch.randint(0, 32, (8, 255))
def step():
    out = model(x, x)
    (out.loss + out.aux_loss).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
step()
t0 = time.perf_counter()
for _ in range({steps}):
    step()
print((time.perf_counter() - t0) / {steps})
"""


def spin() -> None:
    while True:
        pass


def run_case(steps: int, extra_env: dict[str, str], threads: int) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.update(extra_env)
    r = subprocess.run([sys.executable, "-c", STEP.format(steps=steps, threads=threads)], env=env,
                       capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out")
    ap.add_argument("--spincounts", type=int, nargs="*", default=[],
                    help="also try these GOMP_SPINCOUNT values (spin, then sleep)")
    args = ap.parse_args()
    from moex.cli import CPU_WAIT

    cases = [("default", {}, 0), ("passive", {"OMP_WAIT_POLICY": "PASSIVE"}, 0), ("moex", dict(CPU_WAIT), 0)]
    cases += [(f"spin {n}", {"GOMP_SPINCOUNT": str(n)}, 0) for n in args.spincounts]
    cases += [("1 thread", {}, 1)]
    results = {}
    for load in ("idle", "one core busy"):
        busy = multiprocessing.Process(target=spin, daemon=True) if load != "idle" else None
        if busy:
            busy.start()
        try:
            for name, extra_env, threads in cases:
                sec = run_case(args.steps, extra_env, threads)
                results[f"{load}, {name}"] = sec
                print(f"{load:>14}, {name:>12}: {sec * 1000:8.1f} ms/step", flush=True)
        finally:
            if busy:
                busy.terminate()
                busy.join()
    base_idle, base_busy = results["idle, default"], results["one core busy, default"]
    ratios = {k: round(v / (base_idle if k.startswith("idle") else base_busy), 3) for k, v in results.items()}
    print("ratio to the default policy under the same load:")
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seconds_per_step": results, "ratio_to_default": ratios, "steps": args.steps,
                       "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "command": "python benchmarks/cpu_contention.py " + " ".join(sys.argv[1:])}, f, indent=2)


if __name__ == "__main__":
    main()
