"""Reading a scorer's reply: one 0/1 answer per example shown. A reply that cannot be read fails only the
examples it covers, and says why (delphi voids its whole batch and reports no failure)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


@dataclass
class Parsed:
    values: list[int] | None  # one 0/1 per example, or None
    error: str = ""  # prose | short list | long list | non-binary | not a list


def parse_binary_list(reply: str, n: int) -> Parsed:
    """The first ``[...]`` of ``reply`` as a JSON list of exactly ``n`` values, each 0 or 1."""
    m = re.search(r"\[[^\[\]]*\]", reply)
    if m is None:
        return Parsed(None, "prose")
    try:
        values = json.loads(m.group(0))
    except json.JSONDecodeError:
        return Parsed(None, "not a list")
    if len(values) < n:
        return Parsed(None, "short list")
    if len(values) > n:
        return Parsed(None, "long list")
    if any(isinstance(v, bool) or v not in (0, 1) for v in values):
        return Parsed(None, "non-binary")
    return Parsed([int(v) for v in values])
