"""Export the committed CPU chess models (dense GELU and MoE-X) with ``export_hf`` and check the exports on
real master games: logits through ``AutoModelForCausalLM`` (the shipped code), greedy continuations through
``generate()`` against moex's sampler, and (MoE-X) the Hugging Face reader against the native reader. Then the
committed text model (dense, its own 4,096-entry BPE): the exported tokenizer against moex's on WikiText-2 test,
and perplexity on it through both.

    python results/export/check_export.py GAMES.txt WIKITEXT_TEST.txt WORK results/export
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from moex import GPT, export_hf
from moex.data.chess.vocab import encode
from moex.interp.hf_readers import load_model_or_reader
from moex.interp.readers import MoexReader
from moex.model.generate import generate

RUNS = Path(__file__).resolve().parents[1] / "chess" / "cpu" / "runs"
TEXT_RUN = Path(__file__).resolve().parents[1] / "text" / "cpu" / "runs" / "dense"


def check(name: str, games: list[str], work: Path) -> dict:
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    model = GPT.from_pretrained(RUNS / name).eval()
    out = export_hf(RUNS / name, work / f"hf-{name}")
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    ctx = model.cfg.ctx
    blocks = torch.tensor([encode(g[:ctx]).tolist() for g in games if len(g) >= ctx][:64])
    diff = scale = 0.0
    with torch.no_grad():
        for b in blocks:
            ours = model(b[None]).logits
            diff, scale = max(diff, (ours - hf(b[None]).logits).abs().max().item()), max(scale, ours.abs().max().item())
    prompts = [encode(g[:g.index(" ", 60) + 1]).tolist() for g in games[:32]]  # ~60 characters into each game
    ours = generate(model, prompts, 24)
    theirs = [hf.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False)[0, len(p):].tolist() for p in prompts]
    rec = {"model": name, "mlp": model.cfg.mlp, "blocks": len(blocks), "block_chars": ctx,
           "max_abs_logit_diff": diff, "max_abs_logit": scale, "greedy_prompts": len(prompts), "greedy_new_tokens": 24,
           "greedy_equal": sum(a == b for a, b in zip(ours, theirs)),
           "files": sorted(p.name for p in out.iterdir())}
    if model.cfg.mlp == "moe":
        native, reader = MoexReader(model), load_model_or_reader(out)
        worst = {"router_weights": 0.0, "expert_units": 0.0, "expert_activation": 0.0, "wide_code": 0.0}
        layers = list(range(model.cfg.n_layer))
        for layer in layers:
            for lo in range(0, len(blocks), 16):
                a, b = native.capture(blocks[lo:lo + 16], layer), reader.capture(blocks[lo:lo + 16], layer)
                for key in ("router_weights", "expert_activation", "wide_code"):
                    worst[key] = max(worst[key], (getattr(a, key)() - getattr(b, key)()).abs().max().item())
                for e in range(a.n_experts):
                    (ta, ua), (tb, ub) = a.expert_units(e), b.expert_units(e)
                    assert torch.equal(ta, tb), (layer, e)
                    worst["expert_units"] = max(worst["expert_units"], (ua - ub).abs().max().item())
        rec["readers"] = {"layers": layers, "max_abs_diff": worst}
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


def check_text(text_file: str, work: Path, windows: int = 32) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moex.data.text.tokenizer import load_tokenizer

    t0 = time.time()
    model = GPT.from_pretrained(TEXT_RUN).eval()
    out = export_hf(TEXT_RUN, work / "hf-text-dense")
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    text = Path(text_file).read_text()[:200_000]
    ours_ids = load_tokenizer(TEXT_RUN).encode(text)
    hf_ids = AutoTokenizer.from_pretrained(out, trust_remote_code=True)(text)["input_ids"]
    n = model.cfg.ctx + 1
    idx = torch.tensor(ours_ids[:windows * n]).reshape(windows, n)
    with torch.no_grad():
        ours = model(idx[:, :-1], targets=idx[:, 1:]).loss.item()
        logits = hf(idx[:, :-1]).logits  # the same predictions (``labels=`` would score one fewer per window)
        theirs = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1)).item()
    return {"model": "text/cpu/dense", "mlp": model.cfg.mlp, "text": text_file, "chars": len(text),
            "tokens": len(ours_ids), "tokens_equal": ours_ids == hf_ids, "windows": windows, "window_tokens": n - 1,
            "ppl_moex": float(torch.tensor(ours).exp()), "ppl_exported": float(torch.tensor(theirs).exp()),
            "seconds": round(time.time() - t0, 1)}


def main(games_txt: str, text_file: str, work: str, out: str) -> None:
    games = [g for g in Path(games_txt).read_text().splitlines() if len(g) > 80]
    work_dir, out_dir = Path(work), Path(out)
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    recs = [check(name, games, work_dir) for name in ("gelu", "moex")]
    text = check_text(text_file, work_dir)
    (out_dir / "check.json").write_text(json.dumps({"games": games_txt, "runs": recs, "text": text}, indent=2)
                                        + "\n")
    lines = ["| model | blocks x chars | max abs logit diff (largest abs logit) | greedy continuations equal | "
             "readers: max abs diff (router weights / expert units / expert activation / wide code) |",
             "|---|---|---|---|---|"]
    for r in recs:
        d = r.get("readers", {}).get("max_abs_diff")
        readers = " / ".join(f"{d[k]:.1e}" for k in ("router_weights", "expert_units", "expert_activation",
                                                        "wide_code")) if d else "(dense)"
        lines.append(f"| {r['model']} ({r['mlp']}) | {r['blocks']} x {r['block_chars']} | "
                     f"{r['max_abs_logit_diff']:.1e} ({r['max_abs_logit']:.1f}) | {r['greedy_equal']} / "
                     f"{r['greedy_prompts']} | {readers} |")
    lines += ["", "| text model | tokens of WikiText-2 test (first 200,000 characters) | exported tokenizer equal | "
              "perplexity, moex | perplexity, export |", "|---|---|---|---|---|",
              f"| {text['model']} ({text['mlp']}) | {text['tokens']:,} | {text['tokens_equal']} | "
              f"{text['ppl_moex']:.3f} | {text['ppl_exported']:.3f} |"]
    (out_dir / "check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:5])
