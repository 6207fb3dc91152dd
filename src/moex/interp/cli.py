"""``moex interp chess`` and ``moex interp chess-score``."""

from __future__ import annotations

import argparse

import numpy as np


def cmd_chess(args: argparse.Namespace) -> None:
    from ..data.chess.importer import read_games
    from ..io import load_model, write_json
    from .chess_eval import score_features
    from .collect import collect_chess, default_layer

    model = load_model(args.checkpoint)
    games = read_games(args.games)[: args.n_games or None]
    sae = None
    if args.sae:
        from .sae import SAE

        sae = SAE.load(args.sae)
        args.layer, args.site = sae.cfg.layer, "sae"
    layer = default_layer(model) if args.layer is None else args.layer
    acts = collect_chess(model, games, layer, site="resid" if sae else args.site, device=args.device, sae=sae)
    res = score_features(games, acts.features, acts.f_max, args.train_fraction, device=args.device)
    res.update(checkpoint=str(args.checkpoint), layer=layer, site=args.site, mean_l0=acts.mean_l0,
               sae=str(args.sae) if args.sae else None)
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


def cmd_sae_train(args: argparse.Namespace) -> None:
    import torch

    from ..data.loader import BlockData
    from ..io import load_model, write_json
    from .collect import default_layer
    from .sae import SAEConfig, loss_recovered, train_sae

    model = load_model(args.checkpoint)
    data = BlockData(args.data)
    layer = default_layer(model) if args.layer is None else args.layer
    cfg = SAEConfig(d_in=model.cfg.d_model, d_sae=args.d_sae, kind=args.kind, k=args.k, l1_coef=args.l1,
                    lr=args.lr, layer=layer, checkpoint=str(args.checkpoint))
    sae = train_sae(model, data, cfg, steps=args.steps, batch=args.batch, seed=args.seed, device=args.device)
    sae.save(args.out)
    x, y = data.blocks("val", np.arange(min(16, data.n_blocks("val"))))
    fid = loss_recovered(model.to(args.device), sae.to(args.device), x.to(args.device), y.to(args.device))
    with torch.no_grad():
        z = sae.encode(model.residual(x.to(args.device), layer))
    fid["val_l0"] = (z > 0).sum(-1).float().mean().item()
    write_json(f"{args.out}/fidelity.json", fid)
    print(f"SAE ({args.kind}, {args.d_sae} latents, layer {layer}) -> {args.out}: loss clean {fid['loss_clean']:.4f}, "
          f"spliced {fid['loss_sae']:.4f}, loss recovered {fid['loss_recovered']:.3f}, l0 {fid['val_l0']:.1f}")


def add_sae_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sae", help="sparse-autoencoder baseline on the residual stream")
    ssub = p.add_subparsers(dest="sae_cmd", required=True)
    s = ssub.add_parser("train", help="train an SAE on the residual stream after a layer")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", required=True, help="blocks directory (moex data chess build)")
    s.add_argument("--layer", type=int, help="0-based block (default: 3/4 depth, 6 of 8)")
    s.add_argument("--kind", choices=["topk", "relu"], default="topk")
    s.add_argument("--d-sae", type=int, default=4096)
    s.add_argument("--k", type=int, default=32, help="active latents (topk)")
    s.add_argument("--l1", type=float, default=1.0, help="L1 coefficient (relu)")
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--steps", type=int, default=2000)
    s.add_argument("--batch", type=int, default=8, help="blocks per step")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sae_train)


def add_interp_commands(sub: argparse._SubParsersAction) -> None:
    add_sae_commands(sub)
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
    s.add_argument("--sae", help="score this SAE's latents (moex sae train) instead of the model's units")
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
