"""``moex data ...`` subcommands."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..cliutil import add_command, add_settings, cpus, settings_of
from ..errors import MoexError


def cmd_import(args: argparse.Namespace) -> None:
    from .chess.importer import import_games

    report = import_games(args.inputs, args.out, min_chars=args.min_chars, column=args.column,
                          workers=cpus() if args.workers == 0 else args.workers)
    reasons = Counter(s["reason"].split(":")[0].split(" (")[0] for s in report.skipped)
    print(f"imported {report.imported} games to {Path(args.out) / 'games.txt'}; skipped {len(report.skipped)}"
          + (" (" + ", ".join(f"{n} {r}" for r, n in reasons.most_common()) + ")" if reasons else "")
          + f"; details in {Path(args.out) / 'skipped.jsonl'}")
    for f in report.failed_files:
        print(f"moex: warning: {f['source']}: {f['reason']}")


def cmd_generate(args: argparse.Namespace) -> None:
    from .chess.selfplay import SelfPlayConfig, generate_games, read_openings

    cfg = SelfPlayConfig.from_dict(settings_of(args), source="self-play settings")
    openings = read_openings(args.openings) if args.openings else []
    path = generate_games(args.games, args.out, cfg, seed=args.seed,
                          workers=cpus() if args.workers == 0 else args.workers,
                          openings=openings)
    print(f"wrote {args.games} games to {path}")


def cmd_build(args: argparse.Namespace) -> None:
    from .chess.blocks import build_blocks

    meta = build_blocks(args.games, args.out, val_fraction=args.val_fraction, block=args.block, seed=args.seed)
    s = meta["splits"]
    print(f"train: {s['train']['games']} games, {s['train']['blocks']} blocks; "
          f"val: {s['val']['games']} games, {s['val']['blocks']} blocks -> {args.out}")


def cmd_labels(args: argparse.Namespace) -> None:
    from .chess.importer import read_games
    from .chess.labels import board_labels

    labels = board_labels(read_games(args.games), max_chars=args.max_chars, max_positions=args.max_positions)
    labels.save(args.out)
    print(f"{len(labels.game)} positions from {args.games} -> {args.out} "
          "(arrays: game, char, pieces (P,12,8,8), state (P,8,8))")


def cmd_text_build(args: argparse.Namespace) -> None:
    from .text.build import build_text

    meta = build_text(args.sources, args.out, column=args.column, val_fraction=args.val_fraction,
                      block=args.block, shard_tokens=args.shard_tokens, workers=args.workers or cpus(),
                      max_docs=args.max_docs, hf_split=args.hf_split, tokenizer=args.tokenizer)
    n = meta["n_tokens"]
    name = "GPT-2" if meta["tokenizer"] == "gpt2" else f"BPE-{meta['vocab_size']}"
    print(f"{meta['n_docs']} documents -> {n['train']:,} train + {n['val']:,} val {name} tokens in "
          f"{len(meta['files']['train']) + len(meta['files']['val'])} shard(s) under {args.out}")


def cmd_text_tokenizer(args: argparse.Namespace) -> None:
    from .text.build import build_tokenizer

    tok = build_tokenizer(args.sources, args.out, args.vocab_size, column=args.column, hf_split=args.hf_split,
                          max_docs=args.max_docs)
    print(f"a byte-level BPE of {tok.vocab_size} tokens -> {args.out}/tokenizer.json "
          f"(moex data text build ... --tokenizer {args.out})")


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "data")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    chess_p = dsub.add_parser("chess", help="chess games: import, generate, build blocks, labels")
    csub = chess_p.add_subparsers(dest="chess_cmd", required=True)

    s = csub.add_parser("import", help="PGN (.pgn/.gz/.zst) or CSV with a transcript column -> games.txt")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--min-chars", type=int, default=150)
    s.add_argument("--column", default="transcript", help="CSV column holding the transcript")
    s.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    s.set_defaults(func=cmd_import)

    s = csub.add_parser("generate", help="self-play games (Stockfish, or the pure-Python random player)")
    s.add_argument("--games", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    s.add_argument("--openings", help="file of opening lines (one transcript a line; header 'opening' allowed)")
    add_settings(s, "self-play keys: engine=auto|stockfish|random, nodes (per White move, default 2000), "
                    "max_plies, opening_fraction, exact_recipe=true (Skill Level + 0.01 s/move, not "
                    "reproducible), stockfish_path, engine_timeout (s to answer UCI, default 20)")
    s.set_defaults(func=cmd_generate)

    s = csub.add_parser("build", help="games.txt files -> train.bin/val.bin blocks + meta.json")
    s.add_argument("games", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--val-fraction", type=float, default=0.01)
    s.add_argument("--block", type=int, default=1024)
    s.add_argument("--seed", type=int, default=2357)
    s.set_defaults(func=cmd_build)

    s = csub.add_parser("labels", help="board-state labels at the evaluation positions -> .npz")
    s.add_argument("games")
    s.add_argument("--out", required=True)
    s.add_argument("--max-chars", type=int, default=256)
    s.add_argument("--max-positions", type=int, default=20)
    s.set_defaults(func=cmd_labels)

    text_p = dsub.add_parser("text", help="natural-language corpora -> token shards (GPT-2 BPE or a trained BPE)")
    tsub = text_p.add_subparsers(dest="text_cmd", required=True)
    s = tsub.add_parser("build", help="text / JSONL / parquet files, directories or hf:NAME[:CONFIG] -> "
                                      "uint16 shards + meta.json")
    s.add_argument("sources", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--column", default="text", help="JSONL field / parquet / dataset column with the text")
    s.add_argument("--val-fraction", type=float, default=0.01, help="share of documents held out")
    s.add_argument("--block", type=int, default=1025, help="training block: context + 1 tokens")
    s.add_argument("--shard-tokens", type=int, default=100_000_000)
    s.add_argument("--workers", type=int, default=0, help="tokenising processes (default: all CPUs)")
    s.add_argument("--max-docs", type=int, help="stop after this many documents (e.g. for streamed datasets)")
    s.add_argument("--hf-split", default="train", help="split of a hf: dataset")
    s.add_argument("--tokenizer", metavar="DIR", help="directory with the tokenizer.json to use "
                   "(moex data text tokenizer; default: GPT-2 BPE)")
    s.set_defaults(func=cmd_text_build)

    s = tsub.add_parser("tokenizer", help="learn a small byte-level BPE on the corpus -> tokenizer.json "
                                          "(a tiny model's output head then costs little)")
    s.add_argument("sources", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--vocab-size", type=int, default=4096, help="entries, <|endoftext|> and 256 bytes included")
    s.add_argument("--column", default="text", help="JSONL field / parquet / dataset column with the text")
    s.add_argument("--max-docs", type=int, help="learn from the first this many documents")
    s.add_argument("--hf-split", default="train", help="split of a hf: dataset")
    s.set_defaults(func=cmd_text_tokenizer)
