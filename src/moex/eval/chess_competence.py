"""Does a chess model play chess? Legal-move rate, linear board probes and games against Stockfish, in one
call (``moex eval chess``) and one report. Each part is its own module: ``legal_moves``,
``interp.board_probes``, ``chess_games``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..artifacts import atomic_write, write_json
from ..config import Config, ConfigError
from ..errors import MoexError
from ..interp.board_probes import board_probes
from ..interp.sites import model_fingerprint
from ..model.gpt import GPT
from .chess_games import (BASELINES, MatchConfig, Opponent, WriterPlayer, play_match, skill_elo,
                          summarize_games)
from .legal_moves import ModelWriter, check_chess_model, legal_move_rate

RESULT_JSON = "chess_eval.json"


@dataclass
class ChessEvalConfig(Config):
    """What ``evaluate_chess`` measures (the match against Stockfish has its own ``MatchConfig``)."""

    label: ClassVar[str] = "chess eval"

    prefixes: int = 1000  # held-out game prefixes for the legal-move rate
    temperature: float = 1.0  # of the sampled legal-move rate (greedy is always measured)
    probes: bool = True  # linear board probes of every layer
    play: bool = False  # games against Stockfish (MatchConfig keys: levels, games, colors, movetime, ...)
    seed: int = 0

    def validate(self) -> None:
        if self.prefixes < 1:
            raise ConfigError(f"prefixes={self.prefixes} must be at least 1")
        if not self.temperature > 0:
            raise ConfigError(f"temperature={self.temperature} must be > 0")


def evaluate_chess(model: GPT, games: list[str], cfg: ChessEvalConfig | None = None,
                   match: MatchConfig | None = None, device: str | torch.device = "auto",
                   progress: bool = True) -> dict[str, Any]:
    """Legal-move rate on prefixes of ``games`` (held-out transcripts), board probes on them (first half fits,
    second half tests) and, when ``cfg.play``, ``match``'s games for the model and the baseline players."""
    cfg = cfg or ChessEvalConfig()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_chess_model(model)
    if len(games) < 2:
        raise MoexError(f"chess evaluation needs at least 2 held-out games, got {len(games)}")
    t0 = time.time()
    out: dict[str, Any] = {"config": cfg.to_dict(), "n_games": len(games), "fingerprint": model_fingerprint(model)}
    out["legal_moves"] = legal_move_rate(model, games, cfg.prefixes, cfg.temperature, cfg.seed, device,
                                          progress=progress)
    out["seconds_legal_moves"] = round(time.time() - t0, 1)
    if cfg.probes:
        t0 = time.time()
        out["probes"] = board_probes(model, games, device=device, progress=progress)
        out["seconds_probes"] = round(time.time() - t0, 1)
    if cfg.play:
        t0 = time.time()
        match = (match or MatchConfig()).replace("match", seed=cfg.seed)
        opponent = Opponent(match)
        try:
            players = [WriterPlayer(ModelWriter(model, device, seed=cfg.seed), "model", match.max_attempts)]
            players += [BASELINES[name](cfg.seed) if name == "random" else BASELINES[name]()
                        for name in match.baselines]
            records = [r for p in players for r in play_match(p, match, opponent, progress)]
        finally:
            opponent.close()
        out["match"] = {"config": match.to_dict(), "summary": summarize_games(records), "games": records,
                        "seconds": round(time.time() - t0, 1)}
    return out


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers a table row shows: greedy legal-move rate, chance, best probe layer and its accuracy."""
    lm = result["legal_moves"]
    row = {"legal_move_rate": lm["greedy"]["legal_rate"], "legal_move_rate_sampled": lm["sampled"]["legal_rate"],
           "legal_move_rate_chance": lm["chance"]["legal_rate"]}
    if "probes" in result:
        p = result["probes"]
        row.update(probe_accuracy=p["best_state_accuracy"], probe_layer=p["best_layer"],
                   probe_baseline=p["baseline"]["state_accuracy"],
                   probe_move_baseline=p["move_baseline"]["state_accuracy"])
    return row


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def format_chess_eval(result: dict[str, Any], name: str = "model") -> str:
    lm = result["legal_moves"]
    phases = list(lm["greedy"]["by_phase"])
    lines = [f"# Chess competence of {name}\n",
             f"## Legal-move rate ({lm['n_prefixes']} prefixes of {lm['n_games']} held-out games)\n",
             "| writer | legal | illegal | unparsable | the game's move | "
             + " | ".join(f"{ph} (n = {lm['greedy']['by_phase'][ph]['n']})" for ph in phases) + " |",
             "|---|---|---|---|---|" + "---|" * len(phases)]
    for key, label in (("greedy", "model, greedy"), ("sampled", f"model, sampled (T = {lm['temperature']})"),
                       ("chance", "random characters (chance)")):
        r = lm[key]
        lines.append(f"| {label} | {_pct(r['legal_rate'])} | {r['illegal']} | {r['unparsable']} | "
                     f"{_pct(r['game_move_rate'])} | " + " | ".join(
                         _pct(r["by_phase"].get(ph, {}).get("legal_rate")) for ph in phases) + " |")
    if "probes" in result:
        p = result["probes"]
        lines += ["", f"## Linear board probes (residual stream after each layer; {p['n_train_positions']} train / "
                      f"{p['n_test_positions']} test positions)\n",
                  "| probe from | 13-class square state: accuracy | piece BSPs: accuracy | piece BSPs: mean F1 |",
                  "|---|---|---|---|"]
        for label, r in [("baseline: each square's most common class", p["baseline"]),
                         ("baseline: the same per move number", p["move_baseline"])] + \
                [(f"layer {k}" + (" (best)" if int(k) == p["best_layer"] else ""), v) for k, v in p["layers"].items()]:
            lines.append(f"| {label} | {r['state_accuracy']:.3f} | {r['pieces_accuracy']:.4f} | {r['pieces_f1']:.3f} |")
    if "match" in result:
        m = result["match"]
        cfg = m["config"]
        lines += ["", f"## Games against Stockfish ({cfg['movetime']} s a move; {cfg['games_per_level']} games "
                      f"per level and colour; up to {cfg['max_attempts']} tries a move)\n",
                  "| player | level (approx. Elo) | games | win / draw / loss | forfeits | illegal tries (rate) | "
                  "mean plies | Elo estimate (95%) |", "|---|---|---|---|---|---|---|---|"]
        for r in m["summary"]:
            lv = r["level"]
            level = "all" if lv == "all" else (f"{lv} ({skill_elo(lv):.0f})" if skill_elo(lv) is not None else
                                                {-1: "-1 (depth 1)", -2: "-2 (random mover)"}[lv])
            elo = "-"
            if lv == "all":
                e = r["elo"]
                elo = ("no rated games" if e["n_games"] == 0 else
                       f"{e['elo']:.0f} ({e['low']:.0f}..{e['high']:.0f})" if e["bounded"] else
                       f"below {e['high']:.0f}" if e["low"] <= -1000 else f"above {e['low']:.0f}")
            lines.append(f"| {r['player']} | {level} | {r['games']} | {r['wins']} / {r['draws']} / {r['losses']} | "
                         f"{r['forfeits']} | {r['illegal_tries']} ({_pct(r['illegal_rate'])}) | {r['mean_plies']:.1f} | "
                         f"{elo} |")
    return "\n".join(lines) + "\n"


def write_chess_eval(result: dict[str, Any], out: str | Path, name: str = "model") -> list[Path]:
    """``chess_eval.json`` and ``chess_eval.md`` in ``out`` (each written atomically)."""
    out = Path(out)
    write_json(out / RESULT_JSON, {"model": name, **result})
    md = out / "chess_eval.md"
    atomic_write(md, lambda p: Path(p).write_text(format_chess_eval(result, name)))
    return [out / RESULT_JSON, md]
