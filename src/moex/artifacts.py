"""Artifacts on disk: file names, atomic writes, JSON, and the format version of ``cfg.json``.

Every artifact directory (a model run, a checkpoint, an SAE) holds ``cfg.json`` beside its
``*.safetensors``. ``cfg.json`` carries ``moex_format``: a directory written by a newer, incompatible
moex is refused with a clear error instead of loading wrong. This module does not import torch, so data
preparation and the CLI's parsing stay light.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import MoexError

CFG_JSON = "cfg.json"
MODEL_WEIGHTS = "model.safetensors"
SAE_WEIGHTS = "sae.safetensors"
TRAIN_JSON = "train.json"
TRAIN_STATE = "train_state.pt"
META_JSON = "meta.json"
FORMAT_KEY = "moex_format"
FORMAT_VERSION = 1  # bump when a saved artifact can no longer be read by older code


class ArtifactError(MoexError):
    """A file on disk that is missing, corrupt, truncated or written by an incompatible version."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2) + "\n"))


def read_json(path: str | Path) -> Any:
    """Parsed JSON; a missing or malformed file raises ``ArtifactError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None


def read_output(path: str | Path, filename: str, command: str) -> tuple[Path, Any]:
    """(``path/filename``, its JSON) of a ``moex COMMAND`` output directory; a missing file says what the
    directory is not."""
    p = Path(path) / filename
    if not p.is_file():
        raise ArtifactError(f"{p} not found: not a moex {command} output directory")
    return p, read_json(p)


def write_cfg(path: str | Path, cfg: dict[str, Any]) -> None:
    """Write a ``cfg.json`` stamped with the format version."""
    write_json(path, {FORMAT_KEY: FORMAT_VERSION, **cfg})


def read_cfg(path: str | Path) -> dict[str, Any]:
    """Read a ``cfg.json``: a JSON object, format version checked and removed (absent: version 1)."""
    d = read_json(path)
    if not isinstance(d, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(d).__name__}")
    version = d.pop(FORMAT_KEY, 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(f"{path}: written by an incompatible moex ({FORMAT_KEY} {version!r}; this version "
                            f"reads up to {FORMAT_VERSION}): upgrade moex or re-create the directory")
    return d


def load_safetensors(path: str | Path, device: str = "cpu") -> dict:
    """Tensors of a ``.safetensors`` file; a missing, truncated or corrupt file raises ``ArtifactError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} not found")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: corrupt or truncated safetensors file ({str(e).splitlines()[0]})") from None


def save_safetensors(path: str | Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
