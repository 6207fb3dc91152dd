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
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from ..progress import progress_bar

from ..artifacts import CFG_JSON, MODEL_WEIGHTS, TRAIN_JSON, atomic_write
from ..config import ConfigError, split_settings
from ..data.loader import BlockData
from ..data.text.tokenizer import TOKENIZER_FILE
from ..errors import Interrupted, MoexError
from ..model.config import ModelConfig
from ..model.gpt import GPT
from ..model.summary import summarize
from ..model.upcycle import upcycle
from .checkpoint import (
    latest_checkpoint,
    load_train_state,
    read_train_config,
    save_checkpoint,
    start_run,
    write_train_config,
)
from .config import TrainConfig, build_configs
from .evaluators import Evaluator, evaluators_for

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A40": 150e12, "L40": 181e12}


def lr_at(step: int, t: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine to ``min_lr`` at ``max_steps``."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if step >= t.max_steps:
        return t.min_lr
    progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (t.lr - t.min_lr)


def make_optimizer(model: torch.nn.Module, t: TrainConfig, device: torch.device,
                   fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only; the fused kernel unless ``fused=False``
    (``benchmarks/train_step.py`` measures both)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda" if fused is None else fused
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=fused, foreach=None if fused else True)


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


def layer_metrics(model: GPT) -> dict[str, Any]:
    """Every MLP layer's statistics of the last forward pass, as ``l{i}_{name}``."""
    return {f"l{i}_{k}": v for i, mlp in enumerate(model.mlp_layers()) for k, v in mlp.stats().items()}


def metric_columns(model: GPT, evaluators: list[Evaluator] = ()) -> list[str]:
    cols = ["step", "train_loss", "val_loss", "lr", "tokens_per_s", "mfu", "aux_loss"]
    cols += [c for ev in evaluators for c in ev.columns]
    for i, mlp in enumerate(model.mlp_layers()):
        cols += [f"l{i}_{name}" for name in mlp.stat_names]
    return cols


def check_data(data: BlockData, cfg: ModelConfig) -> None:
    if data.vocab_size > cfg.vocab_size:
        raise MoexError(f"{data.dir}: vocabulary of {data.vocab_size} exceeds the model's {cfg.vocab_size}")
    if data.block - 1 > cfg.ctx:
        raise MoexError(
            f"{data.dir}: blocks of {data.block} need a context of {data.block - 1}; the model has ctx={cfg.ctx} "
            f"(rebuild the data with --block {cfg.ctx + 1} or set ctx={data.block - 1})"
        )


class Trainer:
    """One training run in named stages: ``restore`` (new run or newest checkpoint), then repeated
    ``step`` -> ``log`` (-> ``evaluate``) -> ``checkpoint``; ``fit`` runs them to ``max_steps``.

    New run: ``Trainer(run_dir, mcfg, tcfg)``. Continue a run (a checkpoint, or weights written by
    ``start_run``): ``Trainer(run_dir, resume=True, train_overrides=...)``.
    """

    def __init__(self, run_dir: str | Path, mcfg: ModelConfig | None = None, tcfg: TrainConfig | None = None,
                 resume: bool = False, train_overrides: dict[str, Any] | None = None, progress: bool = True):
        if not resume and (mcfg is None or tcfg is None):
            raise MoexError("a new run needs a model config and a train config")
        self.run_dir = Path(run_dir)
        self.mcfg, self.tcfg = mcfg, tcfg
        self.resume, self.train_overrides, self.progress = resume, train_overrides or {}, progress
        self.step_count = 0
        self.last: dict[str, Any] = {}

    # restore ------------------------------------------------------------------------------------
    def restore(self) -> None:
        """Set up processes, device, data, model, optimizer and data RNG (from the checkpoint on resume)."""
        run_dir = self.run_dir
        self.rank, self.world, local_rank = setup_distributed()
        self.master = self.rank == 0
        init_weights: Path | None = None
        state = None
        if self.resume:
            tcfg = read_train_config(run_dir)
            if self.train_overrides:
                tcfg = tcfg.replace(f"{run_dir}: override", **self.train_overrides)
            ckpt = latest_checkpoint(run_dir)
            init_weights = ckpt if ckpt is not None else run_dir
            if not (init_weights / MODEL_WEIGHTS).exists():
                raise MoexError(f"{run_dir}: nothing to resume (no checkpoint and no model.safetensors)")
            self.mcfg = ModelConfig.load(init_weights / CFG_JSON)
            state = load_train_state(ckpt) if ckpt is not None else None
            self.tcfg = tcfg
            if self.rank == 0:
                print(f"{run_dir}: resuming from step {state['step']} ({ckpt.name})" if state else
                      f"{run_dir}: training from its initial weights")
        elif latest_checkpoint(run_dir) is not None:
            raise MoexError(f"{run_dir} already holds checkpoints: use --resume {run_dir}, or another --out")
        tcfg, mcfg = self.tcfg, self.mcfg
        if not tcfg.data:
            raise MoexError("no data directory given (--data DIR)")
        self.per_rank, rem = divmod(tcfg.batch_size, self.world * tcfg.grad_accum)
        if rem or self.per_rank == 0:
            raise MoexError(f"batch_size={tcfg.batch_size} is not divisible by world size {self.world} x "
                            f"grad_accum {tcfg.grad_accum}")

        self.device = device = resolve_device(tcfg, local_rank)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.data = BlockData(tcfg.data)
        check_data(self.data, mcfg)

        torch.manual_seed(tcfg.seed)
        self.model = GPT.from_pretrained(init_weights, map_location=device) if init_weights is not None \
            else GPT(mcfg).to(device)
        self.opt = make_optimizer(self.model, tcfg, device)
        self.gen = torch.Generator().manual_seed(tcfg.seed)
        self.initial_state = state
        if state is not None:
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["data_rng"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            self.step_count = int(state["step"])
        if self.master:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_train_config(run_dir, tcfg)
            if not (run_dir / CFG_JSON).exists():
                mcfg.save(run_dir / CFG_JSON)
            if (self.data.dir / TOKENIZER_FILE).exists():  # the run reads text the way its data was written
                atomic_write(run_dir / TOKENIZER_FILE, lambda p: shutil.copyfile(self.data.dir / TOKENIZER_FILE, p))
        fwd: torch.nn.Module = torch.compile(self.model) if tcfg.compile else self.model
        if self.world > 1:
            fwd = DDP(fwd, device_ids=[local_rank] if device.type == "cuda" else None)
        self.fwd_model = fwd
        self.evaluators = evaluators_for(tcfg, device) if self.master else []
        self.log_file = MetricsLog(run_dir, metric_columns(self.model, self.evaluators),
                                   self.step_count if self.resume else None) if self.master else None
        self.tokens_per_step = tcfg.batch_size * (self.data.block - 1)
        self.fpt, self.peak = flops_per_token(self.model), peak_flops(device)

    def autocast(self):
        return autocast_ctx(self.tcfg, self.device)

    # one optimizer step -------------------------------------------------------------------------
    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the global batch, run this rank's micro-batches, clip, update. Returns (loss, aux loss)."""
        tcfg, device = self.tcfg, self.device
        self.lr = lr_at(self.step_count, tcfg)
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        x, y = self.data.sample("train", tcfg.batch_size, self.gen)
        nxt = self.step_count + 1  # layer statistics only on the steps that log them (evaluation never records)
        self.model.track_stats(nxt % tcfg.log_interval == 0 or nxt % tcfg.eval_interval == 0 or nxt == tcfg.max_steps)
        loss_sum = torch.zeros((), device=device)
        aux_sum = torch.zeros((), device=device)
        for m in range(tcfg.grad_accum):
            lo = (m * self.world + self.rank) * self.per_rank
            xb = x[lo:lo + self.per_rank].to(device, non_blocking=True)
            yb = y[lo:lo + self.per_rank].to(device, non_blocking=True)
            sync = self.world == 1 or m == tcfg.grad_accum - 1
            with (contextlib.nullcontext() if sync else self.fwd_model.no_sync()), self.autocast():
                out = self.fwd_model(xb, yb)
                loss = (out.loss + out.aux_loss) / tcfg.grad_accum
            loss.backward()
            loss_sum += out.loss.detach() / tcfg.grad_accum
            aux_sum += out.aux_loss.detach() / tcfg.grad_accum
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tcfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.model.track_stats(False)
        self.step_count += 1
        return loss_sum, aux_sum

    # log and evaluate ---------------------------------------------------------------------------
    def evaluate(self) -> float:
        """Mean validation loss over a fixed set of validation blocks."""
        return evaluate(self.model, self.data, self.tcfg, self.device, self.autocast)

    @torch.no_grad()
    def run_evaluators(self, final: bool) -> dict[str, float]:
        """The numbers of every evaluator due at this step (the model is put back in training mode)."""
        due = [ev for ev in self.evaluators if final or self.step_count % ev.every == 0]
        if not due:
            return {}
        self.model.eval()
        out: dict[str, float] = {}
        try:
            for ev in due:
                out.update(ev(self.model))
        finally:
            self.model.train()
        return out

    def log(self, loss_sum: torch.Tensor, aux_sum: torch.Tensor, steps: int, seconds: float,
            with_eval: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """One metrics row (train loss, lr, throughput, MFU, per-layer statistics, val loss if asked, and
        the evaluators' numbers)."""
        if self.world > 1:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        train_loss = loss_sum.item()
        tps = self.tokens_per_step * steps / seconds
        row: dict[str, Any] = {
            "step": self.step_count, "train_loss": round(train_loss, 5), "lr": self.lr, "tokens_per_s": round(tps),
            "mfu": round(self.fpt * tps / self.world / self.peak, 4) if self.peak else None,
            "aux_loss": aux_sum.item(), **layer_metrics(self.model),
        }
        if with_eval:
            row["val_loss"] = round(self.evaluate(), 5)
        row.update(extra or {})
        if self.master:
            self.log_file.write(row)
        self.last.update({k: v for k, v in row.items() if v is not None})
        return row

    def checkpoint(self) -> None:
        if self.master:
            save_checkpoint(self.run_dir, self.model, self.tcfg, {
                "step": self.step_count, "optimizer": self.opt.state_dict(), "data_rng": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "world_size": self.world,
            }, self.tcfg.keep_ckpts, self.tcfg.keep_every)

    # the loop -----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Restore, train to ``max_steps``; returns the last logged values."""
        self.restore()
        tcfg = self.tcfg
        bar = progress_bar(total=tcfg.max_steps, initial=self.step_count, desc=f"train {self.run_dir.name}",
                           unit="step", disable=not (self.progress and self.master), dynamic_ncols=True)
        try:
            self.loop(bar)
        except KeyboardInterrupt:
            bar.close()
            ck = latest_checkpoint(self.run_dir)
            saved = f"the last checkpoint is {ck.name}" if ck is not None else "no checkpoint was saved yet"
            raise Interrupted(f"interrupted at step {self.step_count} of {tcfg.max_steps}; {saved}",
                              f"moex train --resume {self.run_dir}") from None
        bar.close()
        if self.world > 1:
            dist.barrier()
        if self.initial_state is None and self.step_count == 0:
            self.checkpoint()
        return dict(self.last)

    def loop(self, bar: Any) -> None:
        """Steps until ``max_steps``, logging, evaluating and checkpointing on their intervals."""
        tcfg = self.tcfg
        t0, steps_since = time.perf_counter(), 0
        self.fwd_model.train()
        while self.step_count < tcfg.max_steps:
            loss_sum, aux_sum = self.step()
            steps_since += 1
            bar.update(1)
            step = self.step_count
            do_eval = step % tcfg.eval_interval == 0 or step == tcfg.max_steps
            seconds = time.perf_counter() - t0
            extra = self.run_evaluators(final=step == tcfg.max_steps)
            if step % tcfg.log_interval == 0 or do_eval or extra:
                row = self.log(loss_sum, aux_sum, steps_since, seconds, do_eval, extra)
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=self.last.get("val_loss", ""),
                                tok_s=f"{row['tokens_per_s']:,.0f}")
                t0, steps_since = time.perf_counter(), 0
            if step % tcfg.ckpt_interval == 0 or step == tcfg.max_steps:
                self.checkpoint()
                t0, steps_since = time.perf_counter(), 0


def train(
    run_dir: str | Path, mcfg: ModelConfig | None = None, tcfg: TrainConfig | None = None,
    resume: bool = False, train_overrides: dict[str, Any] | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Train a model into ``run_dir`` (new run: ``mcfg`` + ``tcfg``; ``resume=True``: continue the run)."""
    return Trainer(run_dir, mcfg, tcfg, resume=resume, train_overrides=train_overrides, progress=progress).fit()


def run_training(out: str | Path | None = None, preset: str | None = None, mlp: str | None = None,
                 settings: dict[str, Any] | None = None, resume: str | Path | None = None,
                 progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """What ``moex train`` does: a new run in ``out`` from a backbone preset, an MLP preset and settings
    (model or train keys), or ``resume`` a run with train settings changed (its model cannot change)."""
    settings = dict(settings or {})
    if resume:
        model_over, train_over = split_settings(settings, ModelConfig, TrainConfig)
        if model_over or preset or mlp:
            raise ConfigError(f"resuming continues {resume} with its own model; model settings "
                              f"({', '.join(model_over) or 'preset/mlp'}) cannot change")
        return Path(resume), train(resume, resume=True, train_overrides=train_over, progress=progress)
    if not out:
        raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
    mcfg, tcfg = build_configs(preset or "chess-8l", mlp, settings)
    return Path(out), train(out, mcfg, tcfg, progress=progress)


def upcycle_run(source: str | Path, out: str | Path, mlp: str = "moex", seed: int = 0,
                settings: dict[str, Any] | None = None) -> Path:
    """A new run in ``out`` whose MoE model is upcycled from the dense run ``source``; its train settings
    are the source's with ``settings`` applied. Continue it with ``train(out, resume=True)``."""
    model_over, train_over = split_settings(settings or {}, ModelConfig, TrainConfig)
    dense = GPT.from_pretrained(source)
    moe = upcycle(dense, mlp=mlp, seed=seed, **model_over)
    src = Path(source)
    tcfg = read_train_config(src) if (src / TRAIN_JSON).exists() else TrainConfig()
    return start_run(out, moe, tcfg.replace("upcycle settings", **train_over))
