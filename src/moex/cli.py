"""The ``moex`` command line. Each subcommand is argument parsing plus one library call."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .cliutil import COMMANDS, add_command, add_settings, gather_settings, settings_of
from .errors import Interrupted, MoexError


# model ------------------------------------------------------------------------------------------
def cmd_model_summary(args: argparse.Namespace) -> None:
    from .model import format_summary, summarize_config

    s = summarize_config(args.preset, args.mlp, **settings_of(args, sections=("model",)))
    print(json.dumps(s, indent=2) if args.json else format_summary(s))


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    from .model import BACKBONES, mlp_presets

    p = add_command(sub, "model")
    msub = p.add_subparsers(dest="model_cmd", required=True)
    s = msub.add_parser("summary", help="total and activated parameter counts, per-layer layout")
    s.add_argument("--preset", default="chess-8l", help=f"backbone: {', '.join(BACKBONES)}")
    s.add_argument("--mlp", default=None, help=f"MLP preset: {', '.join(mlp_presets())}")
    s.add_argument("--json", action="store_true", help="print JSON (keys total_params, active_params, layers)")
    add_settings(s, "model keys, e.g. n_experts=16")
    s.set_defaults(func=cmd_model_summary)


# One example per command, shown at the end of its --help (``tests/test_cli.py`` parses each one).
EXAMPLES = {
    "model summary": "moex model summary --preset chess-8l --mlp moex n_experts=16",
    "data chess import": "moex data chess import games/*.pgn --out data/games",
    "data chess generate": "moex data chess generate --games 1000 --out data/selfplay engine=stockfish nodes=200",
    "data chess build": "moex data chess build data/games/games.txt --out data/blocks --block 1024",
    "data chess labels": "moex data chess labels data/eval/games.txt --out data/eval/labels.npz",
    "data text build": "moex data text build wiki.train.txt --out data/text --block 1025",
    "data text tokenizer": "moex data text tokenizer wiki.train.txt --out data/bpe --vocab-size 4096",
    "train": "moex train --preset tiny --mlp moex --data data/blocks --out runs/moex max_steps=2000 lr=1e-3",
    "upcycle": "moex upcycle --from runs/gelu --mlp moex --out runs/moex-up max_steps=1000",
    "eval ppl": "moex eval ppl --checkpoint runs/lm --data wikitext-2-valid.txt --out eval/ppl.json",
    "eval chess": "moex eval chess --checkpoint runs/gelu --games data/eval/games.txt --out eval/gelu play=true "
                  "levels=[0,1,2] games_per_level=10",
    "sae train": "moex sae train --checkpoint runs/gelu --data data/blocks --layer 6 --out sae/gelu d_sae=4096",
    "interp chess": "moex interp chess --checkpoint runs/moex --games data/eval/games.txt --layer 6 --out moex.json",
    "interp chess-features": "moex interp chess-features --checkpoint runs/moex --games data/eval/games.txt "
                             "--layer 6 --out feats.npy",
    "interp chess-score": "moex interp chess-score --games data/eval/games.txt --features feats.npy --out scored.json",
    "experiment chess": "moex experiment chess --scale tiny --out exp/tiny",
    "demo": "moex demo --out moex-demo steps=300",
    "experts": "moex experts --model allenai/OLMoE-1B-7B-0924 --data wiki.txt --layers 4 8 "
               "--llm openai:http://localhost:8000/v1:llama --out experts/olmoe",
    "probe": "moex probe --model runs/moex-lm --conllu en_ewt-ud-dev.conllu --out probe/moex",
    "autointerp": "moex autointerp --checkpoint runs/moex-lm --data wiki.txt --layer 3 --features 50 "
                  "--llm local:smollm2 --out ai/moex",
    "export hf": "moex export hf --checkpoint runs/moex --out hf/moex",
    "browse": "moex browse --checkpoint runs/moex --games data/eval/games.txt --out site",
}


# Help of the options their commands leave undescribed: by command and option, else by option.
OPTION_HELP = {
    "out": "output path (directory or file, as the command says)",
    "device": "cpu, cuda or auto",
    "seed": "random seed",
    "checkpoint": "a moex run or checkpoint directory",
    "data chess import inputs": "PGN (.pgn, .pgn.gz, .pgn.zst) or CSV files of games",
    "data chess import out": "directory for games.txt (one transcript a line) and skipped.jsonl",
    "data chess import min_chars": "drop games shorter than this many characters (Karvonen: 150)",
    "data chess generate games": "number of self-play games",
    "data chess generate out": "directory for games.txt",
    "data chess build games": "games.txt files to pack into blocks",
    "data chess build out": "directory for train.bin, val.bin and meta.json",
    "data chess build val_fraction": "share of the games held out for validation",
    "data chess build block": "characters per block (the model's context + 1)",
    "data chess build seed": "shuffle seed",
    "data chess labels games": "a games.txt",
    "data chess labels out": "the .npz of board labels at the evaluation positions",
    "data chess labels max_chars": "evaluation positions only in each game's first N characters",
    "data chess labels max_positions": "at most this many evaluation positions per game",
    "data text build sources": "text/JSONL/parquet files, or a Hugging Face dataset name",
    "data text build out": "directory for the token shards and meta.json",
    "data text tokenizer sources": "text/JSONL/parquet files, or a Hugging Face dataset name, to learn the BPE from",
    "data text build shard_tokens": "tokens per shard file",
    "upcycle out": "the new run directory",
    "eval ppl batch_size": "windows per forward pass",
    "sae train out": "directory for the SAE's cfg.json and weights",
    "interp chess out": "the scores as JSON",
    "interp chess-score games": "the games.txt the features were collected on",
    "interp chess-score train_fraction": "share of the games (in file order) that label the features",
    "interp chess-score out": "the scores as JSON",
    "experiment chess scale": "named scale (tiny: a CPU pipeline check; paper: the paper's configuration)",
    "experiment chess out": "directory for data, runs, rows and tables (rerunning resumes)",
    "demo out": "directory for data, runs and tables",
    "experts layers": "0-based layers whose experts to explain",
    "experts window": "tokens per window",
    "experts max_tokens": "corpus tokens read",
    "experts out": "directory for experts.json, experts.md and experts.png",
    "probe out": "directory for probe.json, probe.md and the plots",
    "autointerp layer": "0-based layer (default: 3/4 depth)",
    "autointerp feature_ids": "explain these features instead of random ones",
    "autointerp out": "directory for the activation cache, features/, summary.json and summary.md",
}


def describe_options(words: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    """Give every option a description (from ``OPTION_HELP`` where the command has none) and its default."""
    for a in parser._actions:
        if a.dest in ("help", "settings", "config") or a.help == argparse.SUPPRESS:
            continue
        if a.help is None:
            a.help = OPTION_HELP.get(f"{' '.join(words)} {a.dest}", OPTION_HELP.get(a.dest))
        if a.help and a.default not in (None, False, argparse.SUPPRESS) and "default" not in a.help:
            a.help += f" (default: {a.default})"


def leaf_parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, parser) of every command that runs something."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from leaf_parsers(sub, prefix + (name,))
                else:
                    yield prefix + (name,), sub


def build_parser(command: str | None = "") -> argparse.ArgumentParser:
    """The ``moex`` parser. ``command=""``: every command in full; a command's name: that command in full and the
    others as their one-line help (what ``main`` builds, so ``moex --help`` imports no command module);
    ``None``: every command as its help only."""
    parser = argparse.ArgumentParser(
        prog="moex", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="New here? Start with `moex demo` (data, three models, a Table-1-style comparison, a few minutes on "
               "a CPU).\nEvery command's --help ends with an example.")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice, one per core)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    wanted = {COMMANDS[name][:2] for name in COMMANDS if command == "" or name == command}
    for module, function in dict.fromkeys(COMMANDS[name][:2] for name in COMMANDS):  # in the table's order
        if (module, function) in wanted:
            getattr(importlib.import_module(module), function)(sub)
    for name in COMMANDS:
        if name not in sub.choices:
            add_command(sub, name)
    for words, leaf in leaf_parsers(parser):
        describe_options(words, leaf)
        example = EXAMPLES.get(" ".join(words))
        if example:
            leaf.formatter_class = argparse.RawDescriptionHelpFormatter
            leaf.epilog = f"example:\n  {example}"
    parser._positionals.title = "commands"
    return parser


def command_word(argv: list[str]) -> str | None:
    """The top-level command named in ``argv`` (after the global options), or None."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--threads":
            i += 2
            continue
        if word.startswith("-"):
            i += 1
            continue
        return word if word in COMMANDS else None
    return None


CPU_WAIT = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}  # libgomp (Linux torch) / LLVM and Intel OpenMP


def quiet_cpu_threads() -> None:
    """Idle OpenMP threads spin briefly, then sleep (unless the user chose a wait policy). With the default
    long spin, one core kept busy by another process makes every parallel region wait for a descheduled
    thread (4x slower on 2 cores); a passive policy costs the idle case a few percent. Measured side by side
    by ``benchmarks/cpu_contention.py``. Must run before torch starts its thread pool (before its import)."""
    if "OMP_WAIT_POLICY" in os.environ:
        return
    for key, value in CPU_WAIT.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    quiet_cpu_threads()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_word(argv)).parse_args(argv)
    gather_settings(args)
    try:
        if args.threads is not None:
            import torch

            if args.threads < 1:
                raise MoexError(f"--threads {args.threads}: must be at least 1")
            torch.set_num_threads(args.threads)
        args.func(args)
    except Interrupted as e:
        print(f"moex: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"moex: interrupted ({' '.join(sys.argv[1:3]) or 'moex'})", file=sys.stderr)
        return 130
    except (MoexError, FileNotFoundError) as e:
        print(f"moex: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output that exists as a file, an unwritable directory, a full disk
        print(f"moex: error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
