"""``moex probe``."""

from __future__ import annotations

import argparse

from ..cliutil import add_command
from ..errors import MoexError


def cmd_probe(args: argparse.Namespace) -> None:
    from .probing import compare_probes, run_probe

    if args.compare:
        print(compare_probes(args.compare, args.out))
        return
    if not args.model:
        raise MoexError("--model is required (or --compare DIR ...)")

    regex = {}
    for item in args.regex or []:
        name, eq, pattern = item.partition("=")
        if not eq or not name:
            raise MoexError(f"--regex {item!r}: expected NAME=PATTERN")
        regex[name] = pattern
    res = run_probe(args.model, args.out, conllu=args.conllu or [], regex=regex or None,
                    texts=args.texts or [], concepts=args.concepts, layers=args.layers, min_count=args.min_count,
                    max_tokens=args.max_tokens, tokenizer=args.tokenizer)
    s = res["summary"]
    print(" ".join(f"k={k}: {v:.3f}" for k, v in s["best"].items() if v is not None)
          + f" (mean best-layer F1 over {len(res['concepts'])} concepts) -> {args.out}")


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    add_experts_command(sub)
    p = add_command(sub, "probe")
    p.add_argument("--model", help="moex run directory (text model) or Hugging Face model directory")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="put earlier probe outputs side by side instead")
    p.add_argument("--conllu", nargs="+", help="Universal Dependencies .conllu files: part-of-speech concepts")
    p.add_argument("--regex", nargs="+", metavar="NAME=PATTERN", help="regex concepts over --texts")
    p.add_argument("--texts", nargs="+", help="plain text or code files for the regex concepts")
    p.add_argument("--concepts", nargs="+", help="only these concepts (e.g. NOUN VERB)")
    p.add_argument("--layers", nargs="+", type=int, help="layers to probe (default: all)")
    p.add_argument("--min-count", type=int, default=50, help="skip an expert with fewer positives or negatives")
    p.add_argument("--max-tokens", type=int, default=5000, help="probe tokens per concept")
    p.add_argument("--tokenizer", choices=["auto", "gpt2"], default="auto",
                   help="auto: the model's own (moex text runs: GPT-2 BPE); gpt2: moex's offline GPT-2 BPE")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_probe)


def cmd_experts(args: argparse.Namespace) -> None:
    from .expert_explanations import run_experts

    from ..autointerp.judge_check import judge_line

    res = run_experts(args.model, args.data, args.layers, args.llm, args.out, window=args.window,
                      max_tokens=args.max_tokens, seed=args.seed, require_judge=args.require_judge)
    if res["llm"]:
        print(judge_line(res["judge"]))
    for lay in res["layers"]:
        llm = f"mean expert F1 {lay['mean_f1']:.3f}, " if lay["mean_f1"] is not None else ""
        print(f"layer {lay['layer']}: {llm}token baseline {lay['mean_token_f1']:.3f} (random tokens "
              f"{lay['mean_random_token_f1']:.3f}, routing F1 {lay['mean_routing_f1']:.3f}) over "
              f"{len(lay['experts'])} experts")
    print(f"-> {args.out}/experts.md")


def add_experts_command(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "experts")
    p.add_argument("--model", required=True, help="moex run directory or Hugging Face model directory")
    p.add_argument("--data", nargs="+", required=True, help="text files (each line a document) or a data dir")
    p.add_argument("--layers", nargs="+", type=int, required=True)
    p.add_argument("--llm", help="openai:URL:MODEL or local:PATH (local:smollm2); omitted: the token baseline only")
    p.add_argument("--require-judge", action="store_true",
                   help="stop, before scoring, when the LLM fails the judge check on synthetic features")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_experts)
