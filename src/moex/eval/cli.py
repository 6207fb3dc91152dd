"""``moex eval ppl``: perplexity of checkpoints on evaluation sets; ``moex eval chess``: does a chess model
play chess (legal-move rate, board probes, games against Stockfish)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliutil import add_command
from ..errors import MoexError


def cmd_ppl(args: argparse.Namespace) -> None:
    from .ppl import evaluate_checkpoints, format_table, write_results

    rows = evaluate_checkpoints(args.checkpoint, args.data, stride=args.stride, batch_size=args.batch_size,
                                device=args.device)
    print(format_table(rows))
    if args.out:
        write_results(rows, args.out)
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")


def cmd_chess(args: argparse.Namespace) -> None:
    from ..cliutil import settings_of
    from ..config import split_settings
    from ..data.chess.importer import read_games
    from ..model.gpt import GPT
    from .chess_competence import ChessEvalConfig, evaluate_chess, format_chess_eval, write_chess_eval
    from .chess_games import MatchConfig

    ev, mt = split_settings(settings_of(args), ChessEvalConfig, MatchConfig)
    cfg = ChessEvalConfig.from_dict(ev, "chess eval settings")
    match = MatchConfig.from_dict(mt, "match settings")
    if mt and not cfg.play:
        print(f"note: match settings ({', '.join(mt)}) apply only with play=true")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise MoexError(f"--out {args.out} exists and is not a directory")
    games = read_games(args.games)[: args.n_games or None]
    model = GPT.from_pretrained(args.checkpoint)
    result = evaluate_chess(model, games, cfg, match, device=args.device)
    print(format_chess_eval(result, args.checkpoint))
    if args.out:
        paths = write_chess_eval(result, args.out, args.checkpoint)
        print("wrote " + ", ".join(map(str, paths)))


def add_eval_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "eval")
    esub = p.add_subparsers(dest="eval_cmd", required=True)
    s = esub.add_parser("ppl", help="sliding-window perplexity (text) or LAMBADA accuracy + perplexity")
    s.add_argument("--checkpoint", nargs="+", required=True,
                   help="moex run/checkpoint directories or Hugging Face GPT-2 directories")
    s.add_argument("--data", nargs="+", required=True,
                   help="text/JSONL/parquet files (a name containing 'lambada' is scored as LAMBADA), "
                        "or wikitext-2, wikitext-103, lambada (fetched with `datasets`)")
    s.add_argument("--stride", type=int, help="window stride in tokens (default: context // 2)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", help="write the results as JSON (and a .md table beside it)")
    s.set_defaults(func=cmd_ppl)

    from ..cliutil import add_settings

    s = esub.add_parser(
        "chess", help="does a chess model play chess: legal-move rate, board probes, games against Stockfish",
        description="Legal-move rate on held-out game prefixes (greedy, sampled, and chance), linear probes of "
                    "the board from every layer, and with play=true games against Stockfish (Karvonen's "
                    "protocol) beside random and first-legal-move players, with an Elo estimate.")
    s.add_argument("--checkpoint", required=True, help="a moex chess run or checkpoint directory")
    s.add_argument("--games", required=True,
                   help="held-out games: a games.txt of transcripts (moex data chess import/generate writes one)")
    s.add_argument("--n-games", type=int, default=0, help="use only the first N games (default: all)")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    s.add_argument("--out", help="directory for chess_eval.json and chess_eval.md (default: print only)")
    add_settings(s, "prefixes=1000, temperature=1.0, probes=true, play=false, seed=0; with play=true: "
                    "levels=[0], games_per_level=4, colors=both, movetime=0.05, max_attempts=5, "
                    "max_plies=300, openings=FILE, stockfish_path=PATH, baselines=[\"random\",\"first-legal\"]")
    s.set_defaults(func=cmd_chess)
