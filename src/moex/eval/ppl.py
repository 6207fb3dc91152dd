"""Token-level perplexity with a sliding window, and LAMBADA last-word accuracy / perplexity.

Sliding window: the text's tokens are preceded by ``<|endoftext|>``, so every token of the text is
scored once. Windows of ``ctx`` inputs start every ``stride`` tokens; each window scores only the
targets that no earlier window scored, so every scored token sees at least ``ctx - stride`` tokens of
context (all of them in the first window). ``stride = ctx`` gives disjoint windows; the default is
``ctx // 2``. Perplexity = exp(total NLL / number of scored tokens).

LAMBADA: each passage's last word (with its leading space) is the target; accuracy counts passages
whose target tokens are all the greedy predictions; perplexity = exp(mean over passages of the
target's summed NLL), as in lm-evaluation-harness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ..progress import progress_bar

from ..artifacts import write_json
from ..data.loader import DataError
from ..data.text.build import read_source
from ..data.text.tokenizer import EOT, TextTokenizer, load_tokenizer

# Hugging Face names for the standard evaluation sets, used when the network allows.
HF_SETS = {
    "wikitext-2": ("wikitext", "wikitext-2-raw-v1", "test", "text"),
    "wikitext-103": ("wikitext", "wikitext-103-raw-v1", "test", "text"),
    "lambada": ("EleutherAI/lambada_openai", "default", "test", "text"),
}


@dataclass
class PplResult:
    nll: float  # total negative log-likelihood (nats)
    n_tokens: int  # scored tokens (LAMBADA: passages)
    accuracy: float | None = None  # LAMBADA only
    stride: int | None = None  # sliding window only

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / max(self.n_tokens, 1))


def windows(n_targets: int, ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first) per window over a sequence of ``n_targets + 1`` tokens: inputs
    ``seq[begin:end]``, targets ``seq[begin+1:end+1]``, of which those at positions >= ``first`` count."""
    if not 1 <= stride <= ctx:
        raise ValueError(f"stride={stride} must be in 1..ctx={ctx}")
    out, begin, scored = [], 0, 0
    while scored < n_targets:
        end = min(begin + ctx, n_targets)
        out.append((begin, end, scored + 1))
        scored = end
        begin += stride
    return out


@torch.no_grad()
def sliding_window_nll(model, tokens: list[int] | np.ndarray, stride: int | None = None,
                       ctx: int | None = None, batch_size: int = 8, device: str = "cpu",
                       progress: bool = False, eot: int = EOT) -> PplResult:
    """NLL of ``tokens`` (``eot``, the tokenizer's ``<|endoftext|>``, prepended) under ``model`` with a
    sliding window."""
    ctx = ctx or model.cfg.ctx
    stride = stride or max(1, ctx // 2)
    seq = torch.tensor([eot, *list(tokens)], dtype=torch.long)
    n = seq.numel() - 1
    if n < 1:
        raise DataError("nothing to score: the text has no tokens")
    wins = windows(n, ctx, stride)
    model.eval()
    total = 0.0
    # windows of equal length go in batches; only the last one or two are shorter
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for w in wins:
        groups.setdefault(w[1] - w[0], []).append(w)
    bar = progress_bar(total=len(wins), desc="windows", disable=not progress)
    for length, ws in groups.items():
        for i in range(0, len(ws), batch_size):
            chunk = ws[i: i + batch_size]
            x = torch.stack([seq[b:e] for b, e, _ in chunk]).to(device)
            y = torch.stack([seq[b + 1: e + 1] for b, e, _ in chunk]).to(device)
            logits = model(x).logits.float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
            nll = nll.view(len(chunk), length)
            for row, (b, _, first) in enumerate(chunk):
                total += nll[row, first - 1 - b:].sum().item()
            bar.update(len(chunk))
    bar.close()
    return PplResult(total, n, stride=stride)


@torch.no_grad()
def lambada(model, passages: list[str], device: str = "cpu", progress: bool = False,
            tokenizer: TextTokenizer | None = None) -> PplResult:
    """Last-word accuracy and perplexity over LAMBADA-style passages (GPT-2 BPE unless ``tokenizer``)."""
    tok = tokenizer or TextTokenizer()
    model.eval()
    correct, total = 0, 0.0
    for text in progress_bar(passages, desc="lambada", disable=not progress):
        context, _, word = text.strip().rpartition(" ")
        if not context:
            raise DataError(f"LAMBADA passage without a last word to predict: {text[:60]!r}")
        ctx_tok, tgt = tok.encode(context), tok.encode(" " + word)
        seq = ([tok.eot] + ctx_tok + tgt)[-(model.cfg.ctx + 1):]
        x = torch.tensor(seq[:-1], device=device)[None]
        logits = model(x).logits[0, -len(tgt):].float()
        target = torch.tensor(tgt, device=device)
        total += F.cross_entropy(logits, target, reduction="sum").item()
        correct += bool((logits.argmax(-1) == target).all())
    return PplResult(total, len(passages), correct / len(passages))


def load_eval_text(data: str) -> tuple[str, list[str]]:
    """``data`` -> (kind, documents). kind is 'lambada' for LAMBADA names/files, else 'text'.

    A file or directory of text / JSONL / parquet (LAMBADA: one passage per line or per JSONL row, the
    name containing 'lambada'), or a name of ``HF_SETS`` fetched with ``datasets`` (needs the network).
    """
    path = Path(data)
    kind = "lambada" if "lambada" in path.name.lower() else "text"
    if path.exists():
        docs = [d.text for d in read_source(str(path))]
        if kind == "lambada" and len(docs) == 1 and not str(path).endswith((".jsonl", ".json")):
            docs = [line for line in docs[0].splitlines() if line.strip()]
        return kind, docs
    if data not in HF_SETS:
        raise DataError(f"{data}: no such file, and not one of the known sets ({', '.join(HF_SETS)})")
    repo, config, split, column = HF_SETS[data]
    try:
        import datasets
    except ImportError:
        raise DataError(f"{data}: give the file, or `pip install datasets` to fetch it") from None
    rows = datasets.load_dataset(repo, config, split=split)[column]
    return kind, (rows if kind == "lambada" else ["".join(rows)])


def evaluate(model, data: str, stride: int | None = None, batch_size: int = 8, device: str = "cpu",
             progress: bool = True, tokenizer: TextTokenizer | None = None) -> PplResult:
    """Perplexity of ``model`` on ``data`` (sliding window; LAMBADA accuracy for LAMBADA sets), its text
    tokenised with ``tokenizer`` (default GPT-2 BPE)."""
    tok = tokenizer or TextTokenizer()
    kind, docs = load_eval_text(data)
    if kind == "lambada":
        return lambada(model, docs, device=device, progress=progress, tokenizer=tok)
    # documents of a multi-document source are joined with <|endoftext|> into one stream
    tokens: list[int] = []
    for i, d in enumerate(docs):
        tokens += ([tok.eot] if i else []) + tok.encode(d)
    return sliding_window_nll(model, tokens, stride=stride, batch_size=batch_size, device=device,
                              progress=progress, eot=tok.eot)


def evaluate_checkpoints(checkpoints: list[str | Path], data: list[str], stride: int | None = None,
                         batch_size: int = 8, device: str = "auto") -> list[dict]:
    """Every checkpoint (moex run, with its own tokenizer.json or GPT-2's, or Hugging Face GPT-2 directory) on
    every evaluation set: one row each."""
    from ..model.gpt import GPT

    device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for ckpt in checkpoints:
        model = GPT.from_pretrained(ckpt, map_location=device)
        tok = load_tokenizer(ckpt)
        if model.cfg.vocab_size < tok.vocab_size:
            raise DataError(f"{ckpt}: vocabulary {model.cfg.vocab_size} is smaller than its tokenizer's "
                            f"({tok.name}, {tok.vocab_size}); perplexity needs a text model")
        for d in data:
            r = evaluate(model, d, stride=stride, batch_size=batch_size, device=device, tokenizer=tok)
            rows.append({"checkpoint": str(ckpt), "data": Path(d).name, "n_tokens": r.n_tokens, "nll": r.nll,
                         "ppl": r.ppl, "accuracy": r.accuracy, "stride": r.stride, "ctx": model.cfg.ctx})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| checkpoint | data | tokens | ppl | lambada acc |", "|---|---|---|---|---|"]
    for r in rows:
        acc = "" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        lines.append(f"| {r['checkpoint']} | {r['data']} | {r['n_tokens']:,} | {r['ppl']:.3f} | {acc} |")
    return "\n".join(lines)


def write_results(rows: list[dict], path: str | Path) -> None:
    write_json(Path(path), {"results": rows})
    Path(path).with_suffix(".md").write_text(format_table(rows) + "\n")
