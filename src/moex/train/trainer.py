"""The training loop: AdamW, warmup + cosine, clipping, accumulation, bf16 on CUDA, DDP, resumable.

Batches: every step draws one global batch of ``batch_size`` whole blocks from a seeded generator; under
DDP with W processes and A accumulation steps, micro-step m of rank r takes rows
[(m W + r) b, (m W + r + 1) b) with b = batch_size / (W A). So one process and W processes train on the
same blocks, and a resumed run draws what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from ..errors import MoexError
from ..io import load_model
from ..model.config import ModelConfig
from ..model.gpt import GPT
from ..model.summary import summarize
from ..data.loader import BlockData
from .checkpoint import latest_checkpoint, load_train_state, read_train_config, save_checkpoint, write_train_config
from .config import TrainConfig

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A40": 150e12, "L40": 181e12}


def lr_at(step: int, t: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine to ``min_lr`` at ``max_steps``."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if step >= t.max_steps:
        return t.min_lr
    progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (t.lr - t.min_lr)


def make_optimizer(model: torch.nn.Module, t: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")


def flops_per_token(model: GPT) -> float:
    """Training FLOPs per token: 6 N_active (non-embedding) + 12 L d T (attention), PaLM appendix B."""
    s = summarize(model)
    n = s["active_params"] - s["embedding_params"]
    c = model.cfg
    return 6.0 * n + 12.0 * c.n_layer * c.d_model * c.ctx


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def setup_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(t: TrainConfig, local_rank: int) -> torch.device:
    if t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise MoexError("device=cuda requested but CUDA is not available")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def autocast_ctx(t: TrainConfig, device: torch.device):
    dtype = t.dtype
    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if dtype != "fp32":
        raise MoexError(f"dtype={t.dtype!r} must be auto, fp32 or bf16")
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: BlockData, t: TrainConfig, device: torch.device, ctx_fn) -> float:
    """Mean validation loss over the first ``eval_batches`` x micro-batch val blocks (fixed, comparable)."""
    was_training = model.training
    model.eval()
    micro = max(1, t.batch_size // t.grad_accum)
    n = min(data.n_blocks("val"), t.eval_batches * micro)
    total, count = 0.0, 0
    for start in range(0, n, micro):
        x, y = data.blocks("val", np.arange(start, min(n, start + micro)))
        with ctx_fn():
            out = model(x.to(device), y.to(device))
        total += out.loss.item() * x.shape[0]
        count += x.shape[0]
    model.train(was_training)
    return total / max(1, count)


class MetricsLog:
    """metrics.csv (fixed columns) + metrics.jsonl (everything); pruned past ``step`` on resume."""

    def __init__(self, run_dir: Path, columns: list[str], resume_step: int | None):
        self.csv_path, self.jsonl_path = run_dir / "metrics.csv", run_dir / "metrics.jsonl"
        self.columns = columns
        if resume_step is None:
            self.csv_path.write_text(",".join(columns) + "\n")
            self.jsonl_path.write_text("")
        else:
            self._prune(resume_step)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        except Exception:
            pass

    def _prune(self, step: int) -> None:
        if self.csv_path.exists():
            rows = list(csv.DictReader(open(self.csv_path)))
            with open(self.csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                w.writeheader()
                w.writerows(r for r in rows if int(r["step"]) <= step)
        else:
            self.csv_path.write_text(",".join(self.columns) + "\n")
        if self.jsonl_path.exists():
            keep = [ln for ln in open(self.jsonl_path) if ln.strip() and json.loads(ln)["step"] <= step]
            self.jsonl_path.write_text("".join(keep))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(
                {k: ("" if row.get(k) is None else row[k]) for k in self.columns})
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row["step"])


def moe_metrics(model: GPT) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, block in enumerate(model.h):
        s = getattr(block.mlp, "last_stats", None)
        if not s:
            continue
        load = s["tokens_per_expert"]
        frac = (load / load.sum().clamp_min(1)).tolist()
        out[f"l{i}_l0"] = round(s["l0"].item(), 3)
        out[f"l{i}_entropy"] = round(s["router_entropy"].item(), 4)
        out[f"l{i}_load_max"] = round(max(frac) * len(frac), 4)  # 1.0 = perfectly balanced
        out[f"l{i}_load"] = [round(f, 4) for f in frac]
    return out


def metric_columns(cfg: ModelConfig) -> list[str]:
    cols = ["step", "train_loss", "val_loss", "lr", "tokens_per_s", "mfu", "aux_loss"]
    if cfg.mlp == "moe":
        for i in range(cfg.n_layer):
            cols += [f"l{i}_l0", f"l{i}_entropy", f"l{i}_load_max"]
    return cols


def check_data(data: BlockData, cfg: ModelConfig) -> None:
    if data.vocab_size > cfg.vocab_size:
        raise MoexError(f"{data.dir}: vocabulary of {data.vocab_size} exceeds the model's {cfg.vocab_size}")
    if data.block - 1 > cfg.ctx:
        raise MoexError(
            f"{data.dir}: blocks of {data.block} need a context of {data.block - 1}; the model has ctx={cfg.ctx} "
            f"(rebuild the data with --block {cfg.ctx + 1} or set ctx={data.block - 1})"
        )


def train(
    run_dir: str | Path, mcfg: ModelConfig | None = None, tcfg: TrainConfig | None = None,
    resume: bool = False, train_overrides: dict[str, Any] | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Train a model into ``run_dir`` (new run: ``mcfg`` + ``tcfg``; ``resume=True``: continue the run)."""
    run_dir = Path(run_dir)
    rank, world, local_rank = setup_distributed()
    master = rank == 0
    init_weights: Path | None = None
    state = None
    if resume:
        tcfg = read_train_config(run_dir)
        if train_overrides:
            tcfg = TrainConfig.from_dict({**tcfg.to_dict(), **train_overrides})
        ckpt = latest_checkpoint(run_dir)
        init_weights = ckpt if ckpt is not None else run_dir
        if not (init_weights / "model.safetensors").exists():
            raise MoexError(f"{run_dir}: nothing to resume (no checkpoint and no model.safetensors)")
        mcfg = ModelConfig.load(init_weights / "cfg.json")
        state = load_train_state(ckpt) if ckpt is not None else None
    else:
        assert mcfg is not None and tcfg is not None
        if latest_checkpoint(run_dir) is not None:
            raise MoexError(f"{run_dir} already holds checkpoints: use --resume {run_dir}, or another --out")
    if not tcfg.data:
        raise MoexError("no data directory given (--data DIR)")
    per_rank, rem = divmod(tcfg.batch_size, world * tcfg.grad_accum)
    if rem or per_rank == 0:
        raise MoexError(f"batch_size={tcfg.batch_size} is not divisible by world size {world} x grad_accum "
                        f"{tcfg.grad_accum}")

    device = resolve_device(tcfg, local_rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = BlockData(tcfg.data)
    check_data(data, mcfg)

    torch.manual_seed(tcfg.seed)
    model = load_model(init_weights, map_location=device) if init_weights is not None else GPT(mcfg).to(device)
    opt = make_optimizer(model, tcfg, device)
    gen = torch.Generator().manual_seed(tcfg.seed)
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step = int(state["step"])
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_train_config(run_dir, tcfg)
        if not (run_dir / "cfg.json").exists():
            mcfg.save(run_dir / "cfg.json")
    raw_model = model
    fwd_model: torch.nn.Module = torch.compile(model) if tcfg.compile else model
    if world > 1:
        fwd_model = DDP(fwd_model, device_ids=[local_rank] if device.type == "cuda" else None)
    ctx_fn = lambda: autocast_ctx(tcfg, device)  # noqa: E731
    log = MetricsLog(run_dir, metric_columns(mcfg), step if resume else None) if master else None
    tokens_per_step = tcfg.batch_size * (data.block - 1)
    fpt, peak = flops_per_token(raw_model), peak_flops(device)

    def checkpoint() -> None:
        if master:
            save_checkpoint(run_dir, raw_model, tcfg, {
                "step": step, "optimizer": opt.state_dict(), "data_rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "world_size": world,
            }, tcfg.keep_ckpts, tcfg.keep_every)

    bar = tqdm(total=tcfg.max_steps, initial=step, desc=f"train {run_dir.name}", unit="step",
               disable=not (progress and master), dynamic_ncols=True)
    last: dict[str, Any] = {}
    t0, steps_since = time.perf_counter(), 0
    fwd_model.train()
    while step < tcfg.max_steps:
        lr = lr_at(step, tcfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = data.sample("train", tcfg.batch_size, gen)
        loss_sum = torch.zeros((), device=device)
        aux_sum = torch.zeros((), device=device)
        for m in range(tcfg.grad_accum):
            lo = (m * world + rank) * per_rank
            xb, yb = x[lo:lo + per_rank].to(device, non_blocking=True), y[lo:lo + per_rank].to(device, non_blocking=True)
            sync = world == 1 or m == tcfg.grad_accum - 1
            with (contextlib.nullcontext() if sync else fwd_model.no_sync()), ctx_fn():
                out = fwd_model(xb, yb)
                loss = (out.loss + out.aux_loss) / tcfg.grad_accum
            loss.backward()
            loss_sum += out.loss.detach() / tcfg.grad_accum
            aux_sum += out.aux_loss.detach() / tcfg.grad_accum
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        steps_since += 1
        bar.update(1)

        do_eval = step % tcfg.eval_interval == 0 or step == tcfg.max_steps
        if step % tcfg.log_interval == 0 or do_eval:
            if world > 1:
                dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            train_loss = loss_sum.item()
            dt = time.perf_counter() - t0
            tps = tokens_per_step * steps_since / dt
            row: dict[str, Any] = {
                "step": step, "train_loss": round(train_loss, 5), "lr": lr, "tokens_per_s": round(tps),
                "mfu": round(fpt * tps / world / peak, 4) if peak else None, "aux_loss": aux_sum.item(),
                **moe_metrics(raw_model),
            }
            if do_eval:
                row["val_loss"] = round(evaluate(raw_model, data, tcfg, device, ctx_fn), 5)
            if master:
                log.write(row)
                bar.set_postfix(loss=f"{train_loss:.4f}", val=row.get("val_loss", last.get("val_loss", "")),
                                tok_s=f"{tps:,.0f}")
            last.update({k: v for k, v in row.items() if v is not None})
            t0, steps_since = time.perf_counter(), 0
        if step % tcfg.ckpt_interval == 0 or step == tcfg.max_steps:
            checkpoint()
            t0, steps_since = time.perf_counter(), 0
    bar.close()
    if world > 1:
        dist.barrier()
    if state is None and step == 0:
        checkpoint()
    return last
