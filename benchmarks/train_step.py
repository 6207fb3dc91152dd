"""Training-step time of dense, Switch and MoE-X side by side (issue 6), with MFU, peak memory and ratios.

    python benchmarks/train_step.py --device cuda --shape chess --batch 100 --compile \
        --out benchmarks/results/train_step_h100.json
    python benchmarks/train_step.py --device cpu          # small shape, for a CPU smoke run

Every model is timed in the same process on the same random tokens: forward (bf16 autocast on CUDA),
backward, AdamW step. Also measured: the sparsity router's share of one MoE layer's forward + backward
(statistics, erf, top-k, softmax against the whole layer). FLOPs per token: 6 x activated non-embedding
parameters + 12 x layers x d x context (PaLM appendix B), the formula the trainer logs MFU with.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from moex.model import GPT, make_config
from moex.model.moe import GROUPED_MM_NAME
from moex.training.config import TrainConfig
from moex.training.trainer import flops_per_token, make_optimizer, peak_flops

SHAPES = {
    "chess": dict(preset="chess-8l"),  # 8 layers, d 512, ctx 1023, dense 4096, 8 x 2048 top-2
    "lm-small": dict(preset="lm-small"),
    "small": dict(preset="tiny", ctx=128),  # CPU smoke shape
    "cpu": dict(preset="tiny"),  # the experiment's cpu scale: 4 layers, d 128, ctx 255
}
MODELS = ("gelu", "switch", "moex")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as the trainer), none on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def matmul_rate(device: torch.device, n: int | None = None, reps: int = 10) -> float:
    """Measured FLOP/s of one large square matmul (bf16 on CUDA, fp32 on CPU): the MFU denominator that
    this machine actually reaches, beside the data-sheet peak."""
    n = n or (8192 if device.type == "cuda" else 1024)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def time_steps(model: GPT, device: torch.device, batch: int, steps: int, warmup: int, compile_: bool,
               measured_rate: float | None = None, fused: bool | None = None) -> dict:
    opt = make_optimizer(model, TrainConfig(), device, fused=fused)
    fwd = torch.compile(model) if compile_ else model
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(model.cfg.vocab_size, (batch, model.cfg.ctx), generator=g).to(device)
    y = torch.roll(x, -1, dims=1)
    amp = autocast(device)

    def step() -> None:
        with amp:
            out = fwd(x, y)
            loss = out.loss + out.aux_loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    ms = (time.perf_counter() - t0) / steps * 1e3
    tokens_per_s = batch * model.cfg.ctx / (ms / 1e3)
    peak = peak_flops(device)
    return {
        "ms_per_step": round(ms, 2),
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(flops_per_token(model) * tokens_per_s / peak, 4) if peak else None,
        "mfu_of_measured_matmul": round(flops_per_token(model) * tokens_per_s / measured_rate, 4)
        if measured_rate else None,
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
        else None,
    }


def router_fraction(model: GPT, device: torch.device, tokens: int, reps: int = 10) -> dict:
    """Router forward+backward time over the whole MoE layer's forward+backward, on ``tokens`` inputs."""
    moe = model.moe_layers()[0]
    x = torch.randn(tokens, model.cfg.d_model, device=device, requires_grad=True)
    amp = autocast(device)

    def timed(fn) -> float:
        for _ in range(2):
            fn()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / reps * 1e3

    def router() -> None:
        with amp:
            logits, _, gates = moe.route(x)
        (logits.sum() + gates.sum()).backward()

    def layer() -> None:
        with amp:
            y, aux = moe(x[None])
        (y.float().sum() + aux).backward()

    r, whole = timed(router), timed(layer)
    return {"router_ms": round(r, 3), "moe_layer_ms": round(whole, 3), "router_fraction": round(r / whole, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", choices=list(SHAPES), default=None, help="default: chess on CUDA, small on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default: 100 on CUDA, 4 on CPU")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="one variant: compiled (with --dispatch)")
    ap.add_argument("--dispatch", default="auto", choices=["auto", "grouped", "loop"])
    ap.add_argument("--variants", help="several in one run, e.g. eager-grouped,compiled-grouped,eager-loop; "
                                       "a third part picks AdamW's kernel: eager-auto-fused, eager-auto-foreach "
                                       "(default: the trainer's choice) (overrides --compile/--dispatch)")
    ap.add_argument("--threads", type=int, help="torch threads (CPU)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shape = SHAPES[args.shape or ("chess" if cuda else "small")]
    batch = args.batch or (100 if cuda else 4)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    variants = args.variants.split(",") if args.variants else \
        [f"{'compiled' if args.compile else 'eager'}-{args.dispatch}"]
    if args.threads:
        torch.set_num_threads(args.threads)
    rate = matmul_rate(device)
    print(f"measured matmul rate: {rate / 1e12:.1f} TFLOP/s ({'bf16' if cuda else 'fp32'})", flush=True)
    report = {
        "benchmark": "train_step",
        "command": "python " + " ".join(sys.argv),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "shape": shape, "batch": batch, "grouped_mm": GROUPED_MM_NAME, "threads": torch.get_num_threads(),
        "measured_matmul_tflops": round(rate / 1e12, 2), "variants": {},
    }
    for variant in variants:
        mode, _, rest = variant.partition("-")
        dispatch, _, optimizer = rest.partition("-")
        if mode not in ("eager", "compiled") or dispatch not in ("auto", "grouped", "loop") or \
                optimizer not in ("", "fused", "foreach"):
            raise SystemExit(f"variant {variant!r}: expected eager|compiled-auto|grouped|loop[-fused|-foreach]")
        fused = {"": None, "fused": True, "foreach": False}[optimizer]
        results = {}
        for mlp in args.models.split(","):
            over = {k: v for k, v in shape.items() if k != "preset"}
            if mlp != "gelu":
                over["moe_dispatch"] = dispatch
            torch.manual_seed(0)
            model = GPT(make_config(shape["preset"], mlp, **over)).to(device)
            results[mlp] = time_steps(model, device, batch, args.steps, args.warmup, mode == "compiled", rate, fused)
            if mlp == "moex":
                results[mlp].update(router_fraction(model, device, tokens=min(batch * model.cfg.ctx, 32768)))
            print(f"{variant:>16} {mlp:>7}: {json.dumps(results[mlp])}", flush=True)
            del model
            if cuda:
                torch.cuda.empty_cache()
        entry = {"results": results}
        dense = results.get("gelu", {}).get("ms_per_step")
        for mlp in ("switch", "moex"):
            if dense and mlp in results:
                entry[f"{mlp}_over_dense_step_ratio"] = round(results[mlp]["ms_per_step"] / dense, 3)
        report["variants"][variant] = entry
        print(variant, json.dumps({k: v for k, v in entry.items() if k.endswith("ratio")}), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
