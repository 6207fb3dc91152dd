"""The sweep that chose the `cpu` scale's shape: legal-move rate per CPU-minute of training.

Each configuration trains a dense GELU model on the imported master games (one thread) for about the same
number of tokens, then its greedy legal-move rate is measured on 500 prefixes of held-out master games at
three checkpoints. Run from the repository root, two configurations at a time on a 2-core machine:
    python results/chess/cpu/sweep.py WORK NAME [NAME ...]     # train + evaluate these configurations
    python results/chess/cpu/sweep.py WORK --table             # sweep.md / sweep.json from what finished
WORK holds train/games.txt and eval/games.txt (`run.sh` makes them).
"""

import json
import sys
from pathlib import Path

import torch

from moex import GPT, TrainConfig, make_config, train
from moex.artifacts import write_json
from moex.data.chess.blocks import build_blocks
from moex.data.chess.importer import read_games
from moex.eval.legal_moves import legal_move_rate
from moex.training.checkpoint import checkpoints

TOKENS = 3_000_000  # per configuration (the pilot's 3,000 steps of batch 16 x 255 were 12.2M)
CONFIGS = {  # name: (model overrides of the tiny preset, batch size, lr)
    "L4-d128-ctx255-b16": (dict(), 16, 1e-3),
    "L4-d128-ctx255-b32": (dict(), 32, 2e-3),
    "L2-d128-ctx255-b16": (dict(n_layer=2), 16, 1e-3),
    "L4-d128-ctx511-b8": (dict(ctx=511), 8, 1e-3),
    "L6-d96-ctx255-b16": (dict(n_layer=6, d_model=96, d_mlp=768, n_head=4), 16, 1e-3),
}
PREFIXES = 500


def run(work: Path, name: str) -> dict:
    overrides, batch, lr = CONFIGS[name]
    mcfg = make_config("tiny", "gelu", **overrides)
    blocks = work / f"blocks{mcfg.ctx + 1}"
    if not (blocks / "meta.json").exists():
        build_blocks([work / "train" / "games.txt"], blocks, val_fraction=0.02, block=mcfg.ctx + 1, seed=0)
    steps = round(TOKENS / (batch * mcfg.ctx))
    out = work / "sweep" / name
    tc = TrainConfig(max_steps=steps, batch_size=batch, lr=lr, min_lr=lr / 10, warmup_steps=steps // 20,
                     eval_interval=steps, eval_batches=20, log_interval=50, ckpt_interval=steps // 3,
                     keep_every=steps // 3, data=str(blocks), device="cpu")
    torch.set_num_threads(1)
    if not (out / f"ckpt-{steps:07d}").exists():
        train(out, mcfg, tc)
    # wall time per step from the checkpoints' times (each written as its step is reached; startup excluded)
    cks = checkpoints(out)
    per_step = (cks[-1][1].stat().st_mtime - cks[0][1].stat().st_mtime) / (cks[-1][0] - cks[0][0]) / 60
    minutes = per_step * steps
    games = read_games(work / "eval" / "games.txt")
    points = []
    for step, ck in cks:
        model = GPT.from_pretrained(ck)
        lm = legal_move_rate(model, games, n=PREFIXES, seed=0)
        points.append({"step": step, "tokens": step * batch * mcfg.ctx, "minutes": per_step * step,
                       "legal": lm["greedy"]["legal_rate"],
                       "by_phase": {k: v["legal_rate"] for k, v in lm["greedy"]["by_phase"].items()}})
    val = [json.loads(x) for x in open(out / "metrics.jsonl")]
    result = {"name": name, "overrides": overrides, "batch_size": batch, "lr": lr, "steps": steps,
              "train_minutes": minutes, "params": sum(p.numel() for p in GPT(mcfg).parameters()),
              "val_loss": next(r["val_loss"] for r in reversed(val) if "val_loss" in r), "points": points}
    write_json(work / "sweep" / f"{name}.json", result)
    return result


def table(work: Path) -> str:
    rows = [json.loads((work / "sweep" / f"{n}.json").read_text()) for n in CONFIGS
            if (work / "sweep" / f"{n}.json").exists()]
    lines = ["| configuration | parameters | steps x batch | train minutes (1 thread) | val loss | "
             "legal moves at 1/3, 2/3, 3/3 | moves 1-10 / 11-20 / 21-30 (end) | legal % per minute (end) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        legal = ", ".join(f"{100 * p['legal']:.1f}%" for p in r["points"])
        end = r["points"][-1]
        phases = " / ".join(f"{100 * end['by_phase'][k]:.1f}%" if end["by_phase"].get(k) is not None else "-"
                            for k in ("moves 1-10", "moves 11-20", "moves 21-30"))
        lines.append(f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['steps']} x {r['batch_size']} | "
                     f"{r['train_minutes']:.1f} | {r['val_loss']:.3f} | {legal} | {phases} | "
                     f"{100 * end['legal'] / r['train_minutes']:.2f} |")
    write_json(work / "sweep.json", rows)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    work = Path(sys.argv[1])
    if sys.argv[2:] == ["--table"]:
        print(table(work))
    for name in sys.argv[2:]:
        if name != "--table":
            print(json.dumps(run(work, name)))
