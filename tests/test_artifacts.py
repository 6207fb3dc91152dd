"""Bad artifacts on disk give one ``moex: error:`` line naming the file, never a traceback."""

import json
import shutil

import pytest
import torch

from moex import GPT, SAE, ArtifactError, SAEConfig, make_config
from moex.artifacts import FORMAT_KEY, FORMAT_VERSION, read_cfg
from moex.cli import main


@pytest.fixture()
def model_dir(tmp_path):
    torch.manual_seed(0)
    GPT(make_config("tiny", n_layer=2)).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def one_error_line(capsys, *must_contain: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("moex: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for s in must_contain:
        assert s in err, err
    return err


def commands_reading_a_model(path, tmp_path, games):
    return [["interp", "chess", "--checkpoint", str(path), "--games", str(games), "--out", str(tmp_path / "o.json")],
            ["eval", "ppl", "--checkpoint", str(path), "--data", str(games)],
            ["upcycle", "--from", str(path), "--out", str(tmp_path / "up")],
            ["sae", "train", "--checkpoint", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "s")]]


@pytest.fixture()
def games(chess_games_dir, tmp_path):
    g = tmp_path / "games.txt"
    g.write_text("\n".join(open(chess_games_dir / "games.txt").read().split("\n")[:6]) + "\n")
    return g


def test_format_version_is_written_and_checked(model_dir):
    assert json.loads((model_dir / "cfg.json").read_text())[FORMAT_KEY] == FORMAT_VERSION
    cfg = json.loads((model_dir / "cfg.json").read_text())
    cfg[FORMAT_KEY] = FORMAT_VERSION + 1
    (model_dir / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="incompatible moex"):
        GPT.from_pretrained(model_dir)
    del cfg[FORMAT_KEY]  # directories written before the version existed still load
    (model_dir / "cfg.json").write_text(json.dumps(cfg))
    assert "mlp" in read_cfg(model_dir / "cfg.json") and GPT.from_pretrained(model_dir).cfg.n_layer == 2


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_bad_safetensors(model_dir, tmp_path, games, capsys, damage):
    w = model_dir / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(b"\x13garbage" * 10 if damage == "corrupt" else data[: len(data) // 2])
    for argv in commands_reading_a_model(model_dir, tmp_path, games):
        assert main(argv) == 2, argv
        one_error_line(capsys, str(w), "safetensors")


@pytest.mark.parametrize("bad", [{"n_layer": "2"}, {"mlp": 3}, {"d_model": None}, "not json"])
def test_bad_cfg_json(model_dir, tmp_path, games, capsys, bad):
    path = model_dir / "cfg.json"
    if isinstance(bad, dict):
        path.write_text(json.dumps({**json.loads(path.read_text()), **bad}))
    else:
        path.write_text(bad)
    for argv in commands_reading_a_model(model_dir, tmp_path, games):
        assert main(argv) == 2, argv
        one_error_line(capsys, str(path))


def test_missing_cfg_key_is_caught_by_the_weights(model_dir, tmp_path, games, capsys):
    path = model_dir / "cfg.json"
    cfg = json.loads(path.read_text())
    del cfg["d_mlp"]  # falls back to the default width, which the weights contradict
    path.write_text(json.dumps(cfg))
    assert main(commands_reading_a_model(model_dir, tmp_path, games)[0]) == 2
    one_error_line(capsys, "does not match", str(path))


def test_truncated_block_files(chess_blocks_dir, model_dir, tmp_path, capsys):
    for name in ("train.bin", "val.bin"):
        data = tmp_path / f"data-{name}"
        shutil.copytree(chess_blocks_dir, data)
        f = data / name
        f.write_bytes(f.read_bytes()[:-256])  # a whole block short: only meta.json can tell
        for argv in (["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / f"r-{name}")],
                     ["sae", "train", "--checkpoint", str(model_dir), "--data", str(data), "--out",
                      str(tmp_path / "s")]):
            assert main(argv) == 2
            one_error_line(capsys, str(f), "truncated")
        f.write_bytes(f.read_bytes()[:-100])  # not even whole blocks
        assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "r2")]) == 2
        one_error_line(capsys, str(f))


def test_truncated_text_shard(tmp_path, capsys):
    from moex.data.text.build import build_text

    src = tmp_path / "t.txt"
    src.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    meta = build_text([str(src)], tmp_path / "text", block=65, workers=1, progress=False)
    shard = tmp_path / "text" / meta["files"]["train"][0]
    shard.write_bytes(shard.read_bytes()[:-3])  # an odd byte count: not whole uint16 tokens
    assert main(["train", "--preset", "tiny-lm", "--data", str(tmp_path / "text"), "--out", str(tmp_path / "r"),
                 "ctx=64"]) == 2
    one_error_line(capsys, str(shard), "truncated")


def test_bad_sae_directory(model_dir, tmp_path, games, capsys):
    sae_dir = tmp_path / "sae"
    SAE(SAEConfig(d_in=128, d_sae=64, k=4, layer=1)).save(sae_dir)
    argv = ["interp", "chess", "--checkpoint", str(model_dir), "--games", str(games), "--sae", str(sae_dir),
            "--out", str(tmp_path / "o.json")]
    assert main(argv) == 0
    capsys.readouterr()
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    (sae_dir / "cfg.json").write_text(json.dumps({**cfg, "k": "4"}))
    assert main(argv) == 2
    one_error_line(capsys, str(sae_dir / "cfg.json"), "must be int")
    (sae_dir / "cfg.json").write_text(json.dumps(cfg))
    (sae_dir / "sae.safetensors").write_bytes(b"nope")
    assert main(argv) == 2
    one_error_line(capsys, str(sae_dir / "sae.safetensors"))


@pytest.mark.parametrize("mlp", ["gelu", "moex"])
def test_half_precision_copies_load_back_as_float32_and_predict_alike(tmp_path, mlp):
    """``save_pretrained(dtype=float16)`` halves the file; the copy loads into float32 parameters that equal
    the originals rounded to float16, and its logits stay within float16 rounding of the full model's."""
    torch.manual_seed(0)
    model = GPT(make_config("tiny", n_layer=2, mlp=mlp)).eval()
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    full, half = (tmp_path / d / "model.safetensors" for d in ("full", "half"))
    assert half.stat().st_size < 0.55 * full.stat().st_size
    copy = GPT.from_pretrained(tmp_path / "half").eval()
    for (name, p), q in zip(model.named_parameters(), copy.parameters()):
        assert q.dtype == torch.float32 and torch.equal(q, p.half().float()), name
    x = torch.randint(0, model.cfg.vocab_size, (2, 32))
    with torch.no_grad():
        a, b = model(x).logits, copy(x).logits
    assert (a - b).abs().max() < 1e-2 * a.abs().max()
