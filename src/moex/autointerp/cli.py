"""``moex autointerp`` and ``moex autointerp compare DIR...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliutil import add_command, add_settings, settings_of
from ..errors import MoexError


def cmd_autointerp(args: argparse.Namespace) -> None:
    from .pipeline import compare, run_autointerp

    if args.settings and args.settings[0] == "compare":
        if len(args.settings) < 2:
            raise MoexError("usage: moex autointerp compare DIR [DIR ...] [--out DIR]")
        print(compare(args.settings[1:], args.out))
        return
    judge_only = bool(args.settings) and args.settings[0] == "judge"
    if judge_only:
        args.settings = args.settings[1:]
        if not (args.llm and args.data and args.out):
            raise MoexError("usage: moex autointerp judge [scorer=list|probability] --llm SPEC --data FILE [FILE ...] "
                            "--out DIR [--checkpoint RUN (its tokenizer; default GPT-2 BPE)]")
    if not judge_only and not (args.checkpoint and args.data and args.out):
        raise MoexError("--checkpoint, --data and --out are required")
    from ..config import split_settings
    from ..interp.hf_readers import load_model_or_reader
    from .llm import LLMConfig, load_llm
    from .pipeline import AutointerpConfig

    ai, lc = split_settings(settings_of(args), AutointerpConfig, LLMConfig, source="autointerp settings")
    cfg = AutointerpConfig.from_dict(ai, "autointerp settings")
    llm_cfg = LLMConfig.from_dict(lc, "llm settings")
    if judge_only:
        from .judge_check import judge_line
        from .pipeline import judge_for_run
        from .scoring import scoring_mode

        model = load_model_or_reader(args.checkpoint) if args.checkpoint else None
        llm = load_llm(args.llm, cache_dir=f"{args.out}/llm-cache", cfg=llm_cfg)
        check = judge_for_run(llm, model, args.data, scoring_mode(llm, cfg.scorer), Path(args.out), cfg.window,
                              cfg.per_prompt, args.require_judge, cfg.seed)
        print(f"{judge_line(check)} -> {args.out}/judge_check.json")
        return
    model = load_model_or_reader(args.checkpoint)
    llm = load_llm(args.llm, cache_dir=f"{args.out}/llm-cache", cfg=llm_cfg) if args.llm else None
    s = run_autointerp(model, args.data, args.out, llm, layer=args.layer, site=args.site, n_features=args.features,
                       feature_ids=args.feature_ids, cfg=cfg, device=args.device, require_judge=args.require_judge)
    from .judge_check import judge_line
    from .metrics import format_accuracy

    base = s["token_baseline"]
    head = f"{s['features_scored']} features scored ({len(s['features_skipped'])} skipped): "
    baseline = (f"token baseline detection {format_accuracy(base['detection'])}, random tokens "
                f"{format_accuracy(base['random_detection'])}")
    if llm is None:
        print(f"{head}{baseline} (no LLM) -> {args.out}")
        return
    print(f"{judge_line(s['judge'])}\n{head}detection accuracy {format_accuracy(s['detection'])}, fuzzing "
          f"{format_accuracy(s['fuzzing'])}, {s['detection']['failed'] + s['fuzzing']['failed']} unreadable answers; "
          f"{baseline} -> {args.out}")


def add_autointerp_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "autointerp")
    p.add_argument("--checkpoint", help="moex run directory or Hugging Face model directory")
    p.add_argument("--data", nargs="+", help="text files or a `moex data text build` directory")
    p.add_argument("--layer", type=int)
    p.add_argument("--site", default="mlp", help="mlp, resid or sae:DIR")
    p.add_argument("--features", type=int, default=10, help="random features to explain")
    p.add_argument("--feature-ids", nargs="+", type=int)
    p.add_argument("--llm", help="openai:URL:MODEL (key from $OPENAI_API_KEY) or local:PATH (local:smollm2); "
                                 "omitted: the token baseline and random explanations only")
    p.add_argument("--require-judge", action="store_true",
                   help="stop, before scoring, when the LLM fails the judge check on synthetic features")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    add_settings(p, "autointerp keys: window, n_explain, per_decile, n_deciles, n_negative, per_prompt, "
                    "concurrency, max_tokens, rule (nonzero|topk:K|auto), bos, seed; LLM keys: timeout (s, default "
                    "60), retries (3), max_reply_tokens (300), logprobs (false; true: score from the endpoint's "
                    "top_logprobs); or: compare DIR [DIR ...]; or: judge (the judge check of --llm on --data)")
    p.set_defaults(func=cmd_autointerp)
