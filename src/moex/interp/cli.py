"""``moex interp chess`` and ``moex interp chess-score``."""

from __future__ import annotations

import argparse
import json

import numpy as np


def cmd_chess(args: argparse.Namespace) -> None:
    from ..data.chess.importer import read_games
    from ..io import load_model, write_json
    from .chess_eval import score_features
    from .collect import collect_chess, default_layer

    model = load_model(args.checkpoint)
    games = read_games(args.games)[: args.n_games or None]
    layer = default_layer(model) if args.layer is None else args.layer
    acts = collect_chess(model, games, layer, site=args.site, device=args.device)
    res = score_features(games, acts.features, acts.f_max, args.train_fraction, device=args.device)
    res.update(checkpoint=str(args.checkpoint), layer=layer, site=args.site, mean_l0=acts.mean_l0)
    if args.save_features:
        np.save(args.save_features, acts.features)
        np.save(str(args.save_features).replace(".npy", "") + ".fmax.npy", acts.f_max)
    write_json(args.out, res)
    print(f"layer {layer} {args.site}: coverage {res['coverage']:.4f}, reconstruction {res['reconstruction']:.4f}, "
          f"alive {res['pieces']['alive_features']}/{res['pieces']['n_features']}, mean l0 {acts.mean_l0:.1f} "
          f"-> {args.out}")


def cmd_chess_score(args: argparse.Namespace) -> None:
    from ..data.chess.importer import read_games
    from ..io import write_json
    from .chess_eval import score_features

    games = read_games(args.games)
    feats = np.load(args.features)
    fmax = np.load(args.fmax) if args.fmax else None
    res = score_features(games, feats, fmax, args.train_fraction, device=args.device)
    res.update(features=str(args.features))
    write_json(args.out, res)
    print(f"coverage {res['coverage']:.4f}, reconstruction {res['reconstruction']:.4f} -> {args.out}")


def add_interp_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("interp", help="interpretability metrics")
    isub = p.add_subparsers(dest="interp_cmd", required=True)
    s = isub.add_parser("chess", help="BSP coverage and reconstruction of a checkpoint's layer")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--games", required=True, help="games.txt; the first --train-fraction label features")
    s.add_argument("--layer", type=int, help="0-based block (default: 3/4 depth, 6 of 8)")
    s.add_argument("--site", choices=["mlp", "resid"], default="mlp")
    s.add_argument("--train-fraction", type=float, default=0.5)
    s.add_argument("--n-games", type=int, default=0, help="use the first N games (0: all)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--save-features", help="also save the features (.npy) and f_max (.fmax.npy)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_chess)
    s = isub.add_parser("chess-score", help="score features computed elsewhere (one row per evaluation position)")
    s.add_argument("--games", required=True)
    s.add_argument("--features", required=True, help=".npy (positions x features), game order then position order")
    s.add_argument("--fmax", help=".npy f_max per feature (default: column max of FEATS)")
    s.add_argument("--train-fraction", type=float, default=0.5)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_chess_score)
