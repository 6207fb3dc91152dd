"""Concept datasets for k-sparse probing: texts with labelled character spans, turned into token sets.

Sources: part-of-speech tags from Universal Dependencies CoNLL-U files (each word's UPOS tag over its
characters), and regular expressions over plain text or code (each match labels its characters with
the concept's name). ``concept_sets`` tokenises the texts (any tokenizer that gives each token's start
character) and, as the reference (Gurnee et al. 2023 as applied in "The Expert Strikes Back") does, takes
per text the tokens overlapping a span of the concept as positives and as many random other tokens of
the same text as negatives, until ``max_tokens`` probe tokens per concept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import MoexError
from .tokenizer import gpt2_offsets

Tokenize = Callable[[str], tuple[list[int], list[int]]]  # text -> (token ids, start character of each)


@dataclass
class LabelledText:
    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # [start, end) characters, label


@dataclass
class ConceptSet:
    """Probe tokens of one concept: per text its token ids and the positions of positives and negatives."""

    name: str
    tokens: list[list[int]] = field(default_factory=list)
    positives: list[list[int]] = field(default_factory=list)
    negatives: list[list[int]] = field(default_factory=list)

    @property
    def n_positive(self) -> int:
        return sum(map(len, self.positives))

    @property
    def n_negative(self) -> int:
        return sum(map(len, self.negatives))


class ConlluError(MoexError):
    """A malformed CoNLL-U file; the message names the file and line."""


def read_conllu(path: str | Path) -> list[LabelledText]:
    """Sentences of a CoNLL-U file: the text rebuilt from the word forms (a space after each word unless
    its MISC says ``SpaceAfter=No``), each word's span labelled with its UPOS tag. Multiword-token lines
    (``1-2``) and empty nodes (``1.1``) are skipped."""
    path = Path(path)
    out: list[LabelledText] = []
    cur = LabelledText("")
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\n")
            if not line.strip():
                if cur.spans:
                    cur.text = cur.text.rstrip(" ")
                    out.append(cur)
                cur = LabelledText("")
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise ConlluError(f"{path}:{n}: a token line needs 10 tab-separated fields, found {len(cols)}")
            if "-" in cols[0] or "." in cols[0]:
                continue
            if not cols[0].isdigit():
                raise ConlluError(f"{path}:{n}: token id {cols[0]!r} is not a number")
            form, upos, misc = cols[1], cols[3], cols[9]
            if not form or not upos or upos == "_":
                raise ConlluError(f"{path}:{n}: empty FORM or UPOS")
            start = len(cur.text)
            cur.spans.append((start, start + len(form), upos))
            cur.text += form + ("" if "SpaceAfter=No" in misc.split("|") else " ")
    if cur.spans:
        cur.text = cur.text.rstrip(" ")
        out.append(cur)
    if not out:
        raise ConlluError(f"{path}: no sentence found")
    return out


MAX_CHARS = 300  # characters of each text that a concept set reads


def bounded_pieces(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """A long text cut into pieces of at most ``max_chars`` characters at line breaks (a longer line at spaces,
    or anywhere when it has none), so a whole file becomes many probe texts rather than its first characters."""
    pieces: list[str] = []
    cur = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            cut = line.rfind(" ", 0, max_chars) + 1 or max_chars
            if cur:
                pieces.append(cur)
                cur = ""
            pieces.append(line[:cut])
            line = line[cut:]
        if len(cur) + len(line) > max_chars:
            pieces.append(cur)
            cur = ""
        cur += line
    if cur:
        pieces.append(cur)
    return [p for p in pieces if p.strip()]


def regex_labels(texts: list[str], patterns: dict[str, str]) -> list[LabelledText]:
    """Each text with the spans of every match of each concept's pattern labelled by the concept's name."""
    compiled = {}
    for name, p in patterns.items():
        try:
            compiled[name] = re.compile(p)
        except re.error as e:
            raise MoexError(f"concept {name!r}: bad regular expression {p!r} ({e})") from None
    return [LabelledText(t, [(m.start(), m.end(), name) for name, rx in compiled.items() for m in rx.finditer(t)
                             if m.end() > m.start()]) for t in texts]


def concept_sets(labelled: list[LabelledText], tokenize: Tokenize = gpt2_offsets, concepts: list[str] | None = None,
                 max_chars: int = MAX_CHARS, max_tokens: int = 5000, seed: int = 0,
                 max_len: int | None = None) -> dict[str, ConceptSet]:
    """Token-level probe sets, one per concept (every label seen, or ``concepts``). Texts are cut to their
    first ``max_chars`` characters and their tokens to the first ``max_len`` (the model's context). A token is
    positive when its characters overlap a span of the concept; negatives are drawn at random, as many as
    positives, from the same text's other tokens."""
    rng = np.random.default_rng(seed)
    names = concepts or sorted({s[2] for lt in labelled for s in lt.spans})
    sets = {c: ConceptSet(c) for c in names}
    for lt in labelled:
        text = lt.text[:max_chars]
        ids, starts = tokenize(text)
        if not ids:
            continue
        ends = list(starts[1:]) + [len(text)]
        ids, starts, ends = ids[:max_len], starts[:max_len], ends[:max_len]
        for c, cs in sets.items():
            if cs.n_positive + cs.n_negative >= max_tokens:
                continue
            spans = [(s, e) for s, e, label in lt.spans if label == c and s < len(text)]
            if not spans:
                continue
            pos = [i for i, (a, b) in enumerate(zip(starts, ends)) if any(a < e and b > s for s, e in spans)]
            if not pos:
                continue
            others = np.setdiff1d(np.arange(len(ids)), pos)
            neg = sorted(rng.choice(others, size=min(len(pos), len(others)), replace=False).tolist())
            cs.tokens.append(list(ids))
            cs.positives.append(pos)
            cs.negatives.append(neg)
    return sets
