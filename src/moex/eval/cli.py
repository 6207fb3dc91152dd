"""``moex eval ppl``: perplexity of one or more checkpoints on one or more evaluation sets."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_ppl(args: argparse.Namespace) -> None:
    from .ppl import evaluate_checkpoints, format_table, write_results

    rows = evaluate_checkpoints(args.checkpoint, args.data, stride=args.stride, batch_size=args.batch_size,
                                device=args.device)
    print(format_table(rows))
    if args.out:
        write_results(rows, args.out)
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")


def add_eval_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate language models")
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
