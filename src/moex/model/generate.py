"""Sampling from a ``GPT``: batched over prompts of different lengths, greedy or with a temperature per row.

Prompts are left-padded into one batch and prefilled into a ``KVCache``; every further step computes one
token per row. Row b's next token is argmax(logits) when its temperature is 0, else a draw from
softmax(logits / temperature[b]). A row stops after writing one of the ``stop`` tokens (kept in its output)
or after ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor

from .gpt import GPT, KVCache


def next_tokens(logits: Tensor, temperature: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, V) logits -> (B,) tokens: argmax where ``temperature`` is 0, else a softmax draw."""
    greedy = logits.argmax(dim=-1)
    hot = temperature > 0
    if not hot.any():
        return greedy
    probs = torch.softmax(logits[hot].float() / temperature[hot, None], dim=-1)
    drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return greedy.masked_scatter(hot, drawn)


@torch.no_grad()
def generate(model: GPT, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             temperature: float | Sequence[float] = 0.0, stop: Collection[int] = (),
             generator: torch.Generator | None = None, use_cache: bool = True) -> list[list[int]]:
    """Continue every prompt (token ids, each non-empty) by at most ``max_new_tokens`` tokens; return the
    new tokens per prompt. ``use_cache=False`` recomputes the whole sequence at every step (the reference
    loop the cache is checked and timed against)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and no empty prompt")
    device = next(model.parameters()).device
    n, longest = len(prompts), max(len(p) for p in prompts)
    if longest + max_new_tokens > model.cfg.ctx:
        raise ValueError(f"prompt of {longest} tokens + {max_new_tokens} new ones exceed the model's context "
                         f"{model.cfg.ctx}")
    temps = torch.as_tensor(temperature if not isinstance(temperature, (int, float)) else [temperature] * n,
                            dtype=torch.float32, device=device)
    if temps.shape != (n,) or (temps < 0).any():
        raise ValueError(f"temperature: one value >= 0 per prompt ({n}), got {temperature!r}")
    pad = torch.tensor([longest - len(p) for p in prompts], device=device)
    seq = torch.zeros(n, longest, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        seq[i, longest - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
    stop_ids = torch.tensor(sorted(stop), dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    out: list[Tensor] = []
    was = model.training
    model.eval()
    cache = KVCache(model.cfg, n, longest + max_new_tokens, pad, device, next(model.parameters()).dtype)
    step_input = seq
    for _ in range(max_new_tokens):
        if not use_cache:  # recompute everything from an empty cache
            cache.truncate(0)
            step_input = seq
        logits = model(step_input, cache=cache).logits[:, -1]
        tok = next_tokens(logits, temps, generator)
        out.append(tok)
        done |= torch.isin(tok, stop_ids)
        if done.all():
            break
        step_input = tok[:, None]
        if not use_cache:
            seq = torch.cat([seq, step_input], dim=1)
    model.train(was)
    rows = torch.stack(out, dim=1).tolist()
    stops = set(stop)
    result = []
    for row in rows:
        end = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))
        result.append(row[:end])
    return result
