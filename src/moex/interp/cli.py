"""``moex interp chess``, ``moex interp chess-score`` and ``moex sae train``."""

from __future__ import annotations

import argparse

import numpy as np

from ..cliutil import add_command, add_settings, settings_of
from ..errors import MoexError


def cmd_chess(args: argparse.Namespace) -> None:
    from ..artifacts import write_json
    from ..data.chess.importer import read_games
    from ..model.gpt import GPT
    from .chess_eval import score_chess

    model = GPT.from_pretrained(args.checkpoint)
    games = read_games(args.games)[: args.n_games or None]
    site = f"sae:{args.sae}" if args.sae else args.site
    res = score_chess(model, games, args.layer, site, args.train_fraction, device=args.device,
                      fmax_split=args.fmax_split)
    res.update(checkpoint=str(args.checkpoint), sae=str(args.sae) if args.sae else None)
    write_json(args.out, res)
    print(f"layer {res['layer']} {res['site']}: coverage {res['coverage']:.4f} (per-BSP threshold "
          f"{res['coverage_per_bsp']:.4f}), reconstruction {res['reconstruction']:.4f} (per-board mean "
          f"{res['reconstruction_per_board']:.4f}), alive {res['alive']}/{res['features']}, mean l0 "
          f"{res['mean_l0']:.1f} -> {args.out}")


def cmd_chess_features(args: argparse.Namespace) -> None:
    from ..data.chess.importer import read_games
    from ..model.gpt import GPT
    from .collect import collect_chess

    games = read_games(args.games)[: args.n_games or None]
    n_fmax = int(round(len(games) * args.train_fraction)) if args.fmax_split == "train" else None
    acts = collect_chess(GPT.from_pretrained(args.checkpoint), games, args.layer, args.site, device=args.device,
                         fmax_games=n_fmax)
    np.save(args.out, acts.features)
    np.save(str(args.out).removesuffix(".npy") + ".fmax.npy", acts.f_max)
    print(f"{acts.features.shape[0]} positions x {acts.features.shape[1]} features -> {args.out} "
          f"(+ .fmax.npy)")


def load_matrix(path: str) -> np.ndarray:
    """A ``.npy`` array, or one error line naming the file."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise MoexError(f"{path}: not a .npy file (save the features with numpy.save, one row per position)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # the header read, the rest truncated or malformed
        raise MoexError(f"{path}: not a .npy array of features ({str(e).splitlines()[0][:100]})") from None


def cmd_chess_score(args: argparse.Namespace) -> None:
    from ..artifacts import write_json
    from ..data.chess.importer import read_games
    from .chess_eval import score_features

    fmax = load_matrix(args.fmax) if args.fmax else None
    res = score_features(read_games(args.games), load_matrix(args.features), fmax, args.train_fraction,
                         device=args.device)
    res.update(features=str(args.features))
    write_json(args.out, res)
    print(f"coverage {res['coverage']:.4f}, reconstruction {res['reconstruction']:.4f} -> {args.out}")


def cmd_sae_train(args: argparse.Namespace) -> None:
    from .sae import SAEConfig, fit_sae

    settings = settings_of(args)
    if args.layer is not None:
        settings["layer"] = args.layer
    sae, fid = fit_sae(args.checkpoint, args.data, args.out, SAEConfig.from_dict(settings, "SAE settings"),
                       device=args.device)
    c = sae.cfg
    print(f"SAE ({c.kind}, {c.d_sae} latents, layer {c.layer}) -> {args.out}: loss clean {fid['loss_clean']:.4f}, "
          f"spliced {fid['loss_sae']:.4f}, loss recovered {fid['loss_recovered']:.3f}, l0 {fid['val_l0']:.1f}")


def add_sae_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "sae")
    ssub = p.add_subparsers(dest="sae_cmd", required=True)
    s = ssub.add_parser("train", help="train an SAE on the residual stream after a layer")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", required=True, help="blocks directory (moex data chess build)")
    s.add_argument("--layer", type=int, help="0-based block (default: 3/4 depth, 6 of 8)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True)
    add_settings(s, "SAE keys: kind=topk|relu, d_sae (4096), k (32), l1_coef, lr, steps (2000), batch (8 blocks), "
                    "seed, k_aux, aux_coef, dead_after")
    s.set_defaults(func=cmd_sae_train)


def add_interp_commands(sub: argparse._SubParsersAction) -> None:
    add_sae_commands(sub)
    p = add_command(sub, "interp")
    isub = p.add_subparsers(dest="interp_cmd", required=True)

    def site_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--checkpoint", required=True)
        s.add_argument("--games", required=True, help="games.txt; the first --train-fraction label features")
        s.add_argument("--layer", type=int, help="0-based block (default: 3/4 depth, 6 of 8)")
        s.add_argument("--site", default="mlp", help="mlp (the MLP's wide code), resid, or sae:DIR")
        s.add_argument("--n-games", type=int, default=0, help="use the first N games (0: all)")
        s.add_argument("--device", default="cpu")
        s.add_argument("--train-fraction", type=float, default=0.5, help="leading share of games that label features")
        s.add_argument("--fmax-split", choices=["train", "all"], default="train",
                       help="games f_max is taken over (default: the train games)")

    s = isub.add_parser("chess", help="BSP coverage and reconstruction of a checkpoint's layer")
    site_args(s)
    s.add_argument("--sae", help="score this SAE's latents (moex sae train); the same as --site sae:DIR")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_chess)
    s = isub.add_parser("chess-features", help="save a site's features at the evaluation positions (.npy) "
                                               "and f_max (.fmax.npy), for chess-score or other tools")
    site_args(s)
    s.add_argument("--out", required=True, help="FEATS.npy")
    s.set_defaults(func=cmd_chess_features)
    s = isub.add_parser("chess-score", help="score features computed elsewhere (one row per evaluation position)")
    s.add_argument("--games", required=True)
    s.add_argument("--features", required=True, help=".npy (positions x features), game order then position order")
    s.add_argument("--fmax", help=".npy f_max per feature (default: column max of FEATS)")
    s.add_argument("--train-fraction", type=float, default=0.5)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_chess_score)
