"""``moex export hf``."""

from __future__ import annotations

import argparse

from ..cliutil import add_command


def cmd_export_hf(args: argparse.Namespace) -> None:
    from .hf_export import export_hf

    out = export_hf(args.checkpoint, args.out)
    print(f"{args.checkpoint} -> {out} (load: AutoModelForCausalLM.from_pretrained({str(out)!r}, "
          "trust_remote_code=True))")


def add_export_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export")
    esub = p.add_subparsers(dest="export_cmd", required=True)
    s = esub.add_parser("hf", help="a Hugging Face model directory (weights, config, tokenizer, modeling code) "
                                   "that transformers loads without moex")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True, help="the model directory to write (an earlier export there is replaced)")
    s.set_defaults(func=cmd_export_hf)
