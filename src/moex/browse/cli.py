"""``moex browse``."""

from __future__ import annotations

import argparse

from ..cliutil import add_command, add_settings, settings_of


def cmd_browse(args: argparse.Namespace) -> None:
    from .build import BrowseConfig, build_site
    from .chromium import screenshots

    cfg = BrowseConfig.from_dict(settings_of(args), "browse settings")
    rec = build_site(args.checkpoint, args.out, games=args.games, data=args.data, layer=args.layer, site=args.site,
                     autointerp=args.autointerp, probe=args.probe, experts=args.experts, cfg=cfg, device=args.device,
                     chess_eval=args.chess_eval)
    print(f"{rec['width']} features of {rec['site']} layer {rec['layer']}"
          f"{' and its experts' if rec['moe'] else ''} on {rec['rows']} {'games' if rec['kind'] == 'chess' else 'rows'}"
          f" in {rec['seconds']:.1f} s -> {args.out}/index.html")
    if args.screenshots:
        for png in screenshots(args.out, args.screenshots, feature=args.feature):
            print(f"screenshot -> {png}")


def add_browse_command(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "browse")
    p.add_argument("--checkpoint", required=True, help="moex run directory, or a Hugging Face model directory (text)")
    p.add_argument("--games", help="chess games.txt (the first train_fraction label the BSPs)")
    p.add_argument("--data", nargs="+", help="text files or a moex text data directory")
    p.add_argument("--layer", type=int, help="0-based block (default: 3/4 depth)")
    p.add_argument("--site", default="mlp", help="mlp (the MLP's wide code), resid, or sae:DIR")
    p.add_argument("--autointerp", help="moex autointerp output directory of this model, site and layer")
    p.add_argument("--probe", help="moex probe output directory of this model")
    p.add_argument("--experts", help="moex experts output directory of this model")
    p.add_argument("--chess-eval", help="moex eval chess output directory of this model (legal-move rate, board "
                                        "probes, games: shown on the model page)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="site directory (index.html inside)")
    p.add_argument("--screenshots", metavar="DIR", help="also save a PNG of each page kind (headless Chromium)")
    p.add_argument("--feature", type=int, help="the feature of the feature-page screenshot (default: the best BSP "
                                               "F1 or detection score)")
    add_settings(p, "top, per_decile, window, max_tokens, n_games, max_chars, train_fraction, bsps, "
                    "router_tokens, seed")
    p.set_defaults(func=cmd_browse)
