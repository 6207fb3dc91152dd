"""Training engine: learning on real chess blocks, exact resume after SIGKILL, DDP == one process, errors."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from moex import ConfigError, MoexError, run_training, train, upcycle_run
from moex.cli import main
from moex.data.loader import BlockData
from moex.model import load_model, upcycle
from moex.training.config import TrainConfig
from moex.training.trainer import lr_at

SMALL = ["n_layer=2", "d_model=64", "n_head=2", "d_mlp=256", "batch_size=4", "eval_batches=2",
         "log_interval=1", "warmup_steps=5"]


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "moex.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


@pytest.fixture(scope="session")
def dense_run(chess_blocks_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dense"
    run_training(out, "tiny", settings={"data": str(chess_blocks_dir), "max_steps": 200, "n_layer": 2}, progress=False)
    return out


def unigram_loss(data: BlockData) -> float:
    counts = np.bincount(np.asarray(data.splits["train"]).ravel(), minlength=data.vocab_size).astype(float)
    p = counts / counts.sum()
    val = np.asarray(data.splits["val"])[:, 1:].ravel()
    return float(-np.log(p[val] + 1e-12).mean())


def test_tiny_training_beats_unigram(dense_run, chess_blocks_dir):
    rows = [json.loads(line) for line in open(dense_run / "metrics.jsonl")]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    base = unigram_loss(BlockData(chess_blocks_dir))
    print(f"unigram {base:.3f}; val losses {val}")
    assert val[-1] < base - 1.0
    assert val[-1] < val[0]
    header = (dense_run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("step,train_loss,val_loss,lr,tokens_per_s")
    assert (dense_run / "ckpt-0000200" / "train_state.pt").exists()
    assert load_model(dense_run).cfg.mlp == "gelu"


def test_upcycled_loss_at_step_zero(dense_run, chess_blocks_dir):
    """Full-copy experts (P = 1) reproduce the dense model exactly. The paper's split (P = 2: each expert
    a random half of the dense units, decoder x2) is an unbiased estimate: we allow 5% for its variance.
    ReLU experts from a GELU dense model also change the activation: required to keep more than half of the
    dense model's gain over a uniform guess (log 32), i.e. to stay nearer the dense loss than chance."""
    dense = load_model(dense_run).eval()
    data = BlockData(chess_blocks_dir)
    x, y = data.blocks("val", np.arange(min(16, data.n_blocks("val"))))
    with torch.no_grad():
        ref = dense(x, y).loss.item()
        copies = upcycle(dense, "switch", d_expert=dense.cfg.d_mlp).eval()(x, y).loss.item()
        halves = upcycle(dense, "switch").eval()(x, y).loss.item()
        moex = upcycle(dense, "moex").eval()(x, y).loss.item()
    print(f"dense {ref:.4f}  copies {copies:.4f}  switch halves {halves:.4f}  moex (relu) {moex:.4f}")
    assert copies == pytest.approx(ref, abs=1e-5)
    assert abs(halves - ref) / ref < 0.05
    assert moex < (ref + math.log(32)) / 2


def test_upcycle_then_resume_training(dense_run, tmp_path):
    out = tmp_path / "moex"
    upcycle_run(dense_run, out, "moex")
    with pytest.raises(MoexError, match="already holds checkpoints"):
        train(dense_run, resume=False, mcfg=load_model(dense_run).cfg, tcfg=TrainConfig(data="x"))
    _, last = run_training(resume=out, settings={"max_steps": 3, "eval_interval": 3, "warmup_steps": 1},
                           progress=False)
    assert last["step"] == 3
    with pytest.raises(ConfigError, match="model settings \\(d_model\\) cannot change"):
        run_training(resume=out, settings={"d_model": 64})
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert rows[-1]["step"] == 3 and "l0_l0" in rows[-1] and len(rows[-1]["l0_load"]) == 8
    assert load_model(out).cfg.extra["upcycled_from_mlp"] == "gelu"


def test_kill_and_resume_is_bitwise_identical(chess_blocks_dir, tmp_path):
    args = ["train", "--preset", "tiny", "--mlp", "moex", "--data", str(chess_blocks_dir), *SMALL,
            "max_steps=30", "ckpt_interval=10", "eval_interval=10"]
    full = tmp_path / "full"
    r = run_cli(*args, "--out", str(full))
    assert r.returncode == 0, r.stderr
    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "moex.cli", *args, "--out", str(killed)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (killed / "ckpt-0000010").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "ckpt-0000030").exists(), "the run finished before it could be killed"
    r = run_cli("train", "--resume", str(killed))
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in open(killed / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 30


def test_ctrl_c_ends_training_with_one_line_and_resume_says_where(chess_blocks_dir, tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "moex.cli", "train", "--preset", "tiny", "--mlp", "gelu", "--data",
                          str(chess_blocks_dir), *SMALL, "max_steps=100000", "ckpt_interval=3", "eval_interval=1000",
                          "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (run / "ckpt-0000003").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    last = err.strip().splitlines()[-1].split("\r")[-1]
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert re.fullmatch(rf"moex: interrupted at step \d+ of 100000; the last checkpoint is ckpt-\d{{7}}; "
                        rf"resume with: moex train --resume {re.escape(str(run))}", last), last
    ck = sorted(run.glob("ckpt-*"))[-1].name
    r = run_cli("train", "--resume", str(run), "max_steps=" + str(int(ck[5:]) + 1))
    assert r.returncode == 0, r.stderr
    assert f"{run}: resuming from step {int(ck[5:])} ({ck})" in r.stdout


def test_ddp_two_processes_match_one(chess_blocks_dir, tmp_path):
    args = ["--preset", "tiny", "--data", str(chess_blocks_dir), *SMALL, "max_steps=4", "device=cpu",
            "batch_size=8"]
    r = run_cli("train", *args, "--out", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                        "-m", "moex.cli", "train", *args, "--out", str(tmp_path / "two")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (k, (a[k] - b[k]).abs().max())


def test_lr_schedule():
    t = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, t) == pytest.approx(0.1) and lr_at(9, t) == pytest.approx(1.0)
    assert lr_at(60, t) == pytest.approx(0.55) and lr_at(110, t) == pytest.approx(0.1)


def test_clear_errors(chess_blocks_dir, tmp_path, capsys):
    base = ["train", "--data", str(chess_blocks_dir), "--out", str(tmp_path / "r")]
    assert main([*base, "--preset", "tiny", "learning_rate=1"]) == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err
    assert main([*base, "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "meta.json not found" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a moex run directory" in capsys.readouterr().err


def test_checkpoint_of_another_model_kind(dense_run, chess_blocks_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((dense_run / "model.safetensors").read_bytes())
    cfg = json.loads((dense_run / "cfg.json").read_text())
    cfg.update(mlp="moe")
    (bad / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        load_model(bad)
    (bad / "train.json").write_text(json.dumps({"data": str(chess_blocks_dir), "max_steps": 1}))
    assert main(["train", "--resume", str(bad)]) == 2
    assert "does not match" in capsys.readouterr().err


def test_chess_evaluation_during_training(chess_blocks_dir, chess_games_dir, tmp_path):
    from moex import GPT, make_config, read_games, score_chess

    games = read_games(chess_games_dir / "games.txt")[-20:]
    (tmp_path / "eval.txt").write_text("\n".join(games) + "\n")
    run = tmp_path / "run"
    tcfg = TrainConfig(max_steps=4, batch_size=4, warmup_steps=1, eval_interval=100, eval_batches=1,
                       log_interval=100, ckpt_interval=100, data=str(chess_blocks_dir), device="cpu",
                       eval_chess_every=2, eval_chess_games=str(tmp_path / "eval.txt"), eval_chess_n_games=20,
                       eval_chess_layer=1)
    train(run, make_config("tiny", "moex", n_layer=2), tcfg, progress=False)
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    chess = [r for r in rows if "chess_coverage" in r]
    assert [r["step"] for r in chess] == [2, 4]  # two evaluations logged, each in its own row
    assert "chess_reconstruction_per_board" in (run / "metrics.csv").read_text().splitlines()[0]
    for r in chess:
        assert 0 <= r["chess_coverage"] <= r["chess_coverage_per_bsp"] <= 1 and 0 <= r["chess_reconstruction"] <= 1
    final = score_chess(GPT.from_pretrained(run), games, layer=1)  # the same numbers from the saved model
    assert chess[-1]["chess_coverage"] == pytest.approx(final["coverage"], abs=1e-6)
    assert chess[-1]["chess_reconstruction"] == pytest.approx(final["reconstruction"], abs=1e-6)
    with pytest.raises(ConfigError, match="eval_chess_games"):
        TrainConfig(eval_chess_every=2)


@pytest.mark.slow
def test_compiled_cpu_training_follows_eager(chess_blocks_dir, tmp_path):
    """The cpu scale compiles its step: on the CPU, a compiled MoE-X run logs the eager run's losses."""
    from moex import make_config

    losses = {}
    for compiled in (False, True):
        run = tmp_path / f"compiled-{compiled}"
        train(run, make_config("tiny", "moex", n_layer=2), TrainConfig(
            max_steps=6, batch_size=4, data=str(chess_blocks_dir), compile=compiled, log_interval=1, eval_interval=6,
            eval_batches=2, device="cpu", seed=0, warmup_steps=1), progress=False)
        losses[compiled] = [json.loads(line)["train_loss"] for line in open(run / "metrics.jsonl")]
    assert len(losses[True]) == 6 and np.allclose(losses[True], losses[False], rtol=2e-3), losses


def test_layer_statistics_are_kept_on_logged_steps_only(chess_blocks_dir, tmp_path, monkeypatch):
    """Counting active units copies the whole activation, so the trainer records it only on the steps it logs;
    every logged row still has each layer's l0 and load, and evaluation passes record nothing."""
    from moex.model import MLPLayer

    recorded = []
    real = MLPLayer.record

    def spy(self, **stats):
        recorded.append(self.track_stats)
        real(self, **stats)

    monkeypatch.setattr(MLPLayer, "record", spy)
    from moex import make_config

    cfg = make_config("tiny", "moex", n_layer=2)
    tcfg = TrainConfig(data=str(chess_blocks_dir), max_steps=6, batch_size=4, log_interval=3, eval_interval=6,
                       eval_batches=2, warmup_steps=1, device="cpu")
    train(tmp_path / "run", cfg, tcfg, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [3, 6]
    assert all(r["l0_l0"] > 0 and r["l1_l0"] > 0 and len(r["l1_load"]) == 8 for r in rows)
    # only the forward passes of steps 3 and 6 (two MoE layers each) recorded; none of the 2 + 2 eval batches
    assert recorded == [True] * 4


def test_a_training_state_that_would_run_code_is_refused(dense_run, tmp_path):
    """``train_state.pt`` is read with weights_only: a pickle that calls a function is refused by name, unrun."""
    import shutil

    from moex.training.checkpoint import latest_checkpoint, load_train_state

    run = tmp_path / "run"
    shutil.copytree(dense_run, run)
    ckpt = latest_checkpoint(run)
    assert load_train_state(ckpt)["step"] > 0  # a state moex wrote loads
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"step": 1, "evil": Evil()}, ckpt / "train_state.pt")
    with pytest.raises(MoexError, match="beyond tensors and plain values"):
        load_train_state(ckpt)
    assert not marker.exists()
