"""CLI-only behaviour: the OpenMP wait policy it sets before torch starts, --threads, settings given after a list
option, every command's help (an example, every option described) and refused old flag forms."""

import os
import re
import subprocess
import sys

import pytest

from moex.cli import CPU_WAIT, main


def env_after_cli_start(extra: dict) -> dict:
    code = ("import os, sys, moex.cli; moex.cli.quiet_cpu_threads(); "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY")}
    r = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True)
    return dict(zip(("spin", "policy", "torch"), r.stdout.split()))


def test_short_spin_is_set_before_torch_loads_unless_the_user_chose():
    assert env_after_cli_start({}) == {"spin": CPU_WAIT["GOMP_SPINCOUNT"], "policy": "None", "torch": "False"}
    assert env_after_cli_start({"OMP_WAIT_POLICY": "ACTIVE"})["spin"] == "None"  # the user's choice stands
    assert env_after_cli_start({"GOMP_SPINCOUNT": "5"})["spin"] == "5"


def test_threads_option(capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "model", "summary", "--preset", "tiny"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    assert main(["--threads", "0", "model", "summary", "--preset", "tiny"]) == 2
    assert "--threads 0" in capsys.readouterr().err


def test_settings_after_a_list_option_are_settings(tmp_path):
    from moex.cli import build_parser
    from moex.cliutil import gather_settings

    kept = tmp_path / "a=b.txt"  # an existing file that looks like a setting stays a file
    kept.write_text("x")
    args = build_parser().parse_args(["browse", "--checkpoint", "run", "--out", "site", "--data", "t.txt", str(kept),
                                      "top=2", "window=16"])
    gather_settings(args)
    assert args.data == ["t.txt", str(kept)] and args.settings == ["top=2", "window=16"]
    args = build_parser().parse_args(["experiment", "chess", "--out", "x", "--only", "gelu", "moex", "steps=3"])
    gather_settings(args)
    assert args.only == ["gelu", "moex"] and args.settings == ["steps=3"]


def test_every_command_has_an_example_that_parses(capsys):
    import shlex

    from moex.cli import EXAMPLES, build_parser, leaf_parsers

    parser = build_parser()
    leaves = {" ".join(words): p for words, p in leaf_parsers(parser)}
    assert set(leaves) == set(EXAMPLES), set(leaves) ^ set(EXAMPLES)
    for name, leaf in leaves.items():
        assert f"example:\n  {EXAMPLES[name]}" in leaf.format_help(), name
        words = shlex.split(EXAMPLES[name])
        assert words[0] == "moex" and " ".join(words[1:1 + len(name.split())]) == name
        args = parser.parse_args(words[1:])  # the example is valid for its command (exits on a bad one)
        assert callable(args.func), name
    assert "Start with `moex demo`" in parser.format_help()


def test_every_option_is_described_with_its_default():
    from moex.cli import build_parser, leaf_parsers

    for words, p in leaf_parsers(build_parser()):
        for a in p._actions:
            if a.dest == "help":
                continue
            assert a.help, (words, a.dest)
            if a.option_strings and a.default not in (None, False):
                assert "default" in a.help, (words, a.dest, a.help)


def test_old_flag_forms_are_refused_naming_the_setting(capsys):
    for cmd in (["demo"], ["experiment", "chess", "--out", "x"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--engine", "random"])
        assert e.value.code == 2
        assert "--engine is now a setting: write engine=random" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["upcycle", "--from", "r", "--out", "o", "--preset", "switch"])
    assert "--preset names the backbone in moex train" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--out", "r", "--device", "cpu"])
    assert "write device=cpu" in capsys.readouterr().err


def test_missing_checkpoints_and_outputs_that_are_files_are_one_line_errors(tmp_path, capsys):
    import torch

    from moex import GPT, make_config

    torch.manual_seed(0)
    GPT(make_config("tiny", "gelu", n_layer=1, d_model=16, n_head=2, d_mlp=32)).save_pretrained(tmp_path / "run")
    games = tmp_path / "games.txt"
    games.write_text(";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6\n;1.d4 d5 2.c4 e6\n")
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "empty").mkdir()
    missing = str(tmp_path / "nope")
    cases = [
        (["browse", "--checkpoint", "nope", "--games", str(games), "--out", str(tmp_path / "s")], "nope not found"),
        (["probe", "--model", missing, "--out", str(tmp_path / "p")], "nope not found"),
        (["autointerp", "--checkpoint", str(tmp_path / "empty"), "--data", str(games), "--llm", "local:x", "--out",
          str(tmp_path / "a")], "neither a moex run"),
        (["eval", "chess", "--checkpoint", missing, "--games", str(games)], "not a moex checkpoint directory"),
        (["eval", "chess", "--checkpoint", str(tmp_path / "run"), "--games", str(games), "--out",
          str(tmp_path / "afile")], "exists and is not a directory"),
        (["interp", "chess", "--checkpoint", str(tmp_path / "run"), "--games", str(games), "--out",
          str(tmp_path / "afile" / "x.json")], "afile"),
        (["data", "chess", "labels", str(games), "--out", str(tmp_path / "afile" / "x.npz")], "afile"),
        (["export", "hf", "--checkpoint", missing, "--out", str(tmp_path / "hf")], "nope: not a moex run"),
        (["export", "hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "afile")],
         "afile exists and is not a moex export"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("moex: error:") and message in err[0], (argv, err)
    assert (tmp_path / "afile").read_text() == "mine"


def test_bad_sizes_and_outputs_of_the_data_and_training_commands_are_one_line_errors(tmp_path, capsys):
    """Negative or zero sizes, outputs that are files, a binary input and a broken engine: one `moex: error:`
    line naming the thing, exit 2, nothing written."""
    from conftest import REPO, SHAKESPEARE

    games = tmp_path / "games.txt"
    games.write_text(";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6\n;1.d4 d5 2.c4 e6\n")
    pgn = tmp_path / "g.pgn"
    pgn.write_text('[Event "x"]\n\n1. e4 e5 2. Nf3 Nc6 1-0\n')
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    afile, text = str(tmp_path / "afile"), str(SHAKESPEARE)
    text_run = str(REPO / "results" / "text" / "cpu" / "runs" / "dense")  # the committed text model
    hangs, dies = tmp_path / "hangs.sh", tmp_path / "dies.sh"  # "engines" that never answer UCI / exit at once
    hangs.write_text("#!/bin/sh\nsleep 600\n")
    dies.write_text("#!/bin/sh\necho garbage\nexit 3\n")
    hangs.chmod(0o755)
    dies.chmod(0o755)
    cases = [
        (["data", "chess", "import", str(pgn), "--out", afile], "afile"),
        (["data", "chess", "import", str(pgn), "--out", str(tmp_path / "i"), "--min-chars", "-5"], "min_chars=-5"),
        (["data", "chess", "import", str(pgn), "--out", str(tmp_path / "i"), "--workers", "-3"], "workers=-3"),
        (["data", "chess", "generate", "--games", "-5", "--out", str(tmp_path / "g")], "-5"),
        (["data", "chess", "generate", "--games", "2", "--out", str(tmp_path / "g"), "engine=stockfish",
          "stockfish_path=/nonexistent"], "/nonexistent"),
        (["data", "chess", "generate", "--games", "2", "--out", str(tmp_path / "g"), "stockfish_path=/nonexistent"],
         "/nonexistent"),  # engine=auto with a path named: no silent fallback to the random player
        (["data", "chess", "generate", "--games", "2", "--out", str(tmp_path / "g"), "--workers", "2",
          f"stockfish_path={dies}"], "exit code: 3"),
        (["data", "chess", "generate", "--games", "2", "--out", str(tmp_path / "g"), "--workers", "2",
          f"stockfish_path={hangs}", "engine_timeout=2"], "no UCI answer within 2 s"),
        (["data", "chess", "build", str(games), "--out", str(tmp_path / "b"), "--block", "0"], "block"),
        (["data", "chess", "build", str(tmp_path / "binary.txt"), "--out", str(tmp_path / "b")], "binary.txt"),
        (["data", "chess", "build", str(games), "--out", afile, "--block", "16"], "afile"),
        (["data", "text", "build", text, "--out", afile], "afile"),
        (["data", "text", "build", str(tmp_path / "binary.txt"), "--out", str(tmp_path / "t")], "binary.txt"),
        (["data", "text", "tokenizer", text, "--out", afile], "afile"),
        (["data", "text", "tokenizer", text, "--out", str(tmp_path / "k"), "--vocab-size", "0"], "vocab_size=0"),
        (["train", "--preset", "tiny", "--mlp", "gelu", "--data", str(tmp_path / "nodata"), "--out",
          str(tmp_path / "r")], "nodata"),
        (["train", "--preset", "tiny", "--mlp", "gelu", "--data", str(tmp_path / "nodata"), "--out",
          str(tmp_path / "r"), "n_layer=-1"], "n_layer=-1: must be at least 1"),
        (["model", "summary", "--preset", "tiny", "--mlp", "moex", "d_model=-5"], "d_model=-5: must be at least 1"),
        (["data", "text", "build", text, "--out", str(tmp_path / "t"), "--shard-tokens", "0"], "shard_tokens=0"),
        (["data", "chess", "labels", str(games), "--out", str(tmp_path / "l.npz"), "--max-positions", "-1"],
         "max_positions=-1"),
        (["interp", "chess-score", "--games", str(games), "--features", str(games), "--out", str(tmp_path / "s.json")],
         "not a .npy file"),
        (["data", "chess", "generate", "--games", "2", "--out", str(tmp_path / "g"), "max_plies=0"],
         "max_plies=0: must be positive"),
        (["autointerp", "--checkpoint", text_run, "--data", str(tmp_path / "binary.txt"), "--layer", "1", "--out",
          str(tmp_path / "ai")], "binary.txt: looks binary"),
        (["probe", "--model", text_run, "--regex", "n=\\d", "--texts", str(tmp_path / "binary.txt"), "--out",
          str(tmp_path / "pr")], "binary.txt: looks binary"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        err = [line for line in lines if line.startswith("moex:") or not re.search(r"docs/s|games/s|it/s", line)]
        assert len(err) == 1 and err[0].startswith("moex: error:") and message in err[0], (argv, lines)
    assert (tmp_path / "afile").read_text() == "mine"
    for name in ("i", "g", "b", "t", "k", "r"):
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir()), name


def test_top_level_help_imports_no_command_module():
    """``moex --help`` lists every command from the table of commands without importing torch (under 0.5 s, where
    importing torch alone takes seconds); a command's own help builds that command in full."""
    import subprocess
    import sys

    code = ("import sys\nfrom moex.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    from moex.cliutil import COMMANDS

    assert out.strip().endswith("NO TORCH") and all(f"    {name}" in out for name in COMMANDS)
    from moex.cli import build_parser

    full = build_parser()
    one = build_parser("train")
    assert full.parse_args(["train", "--out", "r"]).out == one.parse_args(["train", "--out", "r"]).out == "r"
