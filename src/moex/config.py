"""One config story: every setting lives in a dataclass that mixes in ``Config``.

- ``Cls.from_dict(d, source)`` rejects an unknown key and a wrongly typed value with the same one-line
  message for every config (model, train, SAE, self-play, experiment scale), naming the source.
- ``key=value`` overrides (the value parsed as JSON where it parses, else taken as a string) and
  ``--config FILE`` (a JSON object, flat or in sections named after the configs) are the one syntax of
  every command that takes settings; ``split_settings`` routes each key to the config that owns it.
This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from .errors import MoexError


class ConfigError(MoexError):
    """A configuration that cannot be built: unknown key, wrong type, unknown preset or bad value."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return origin.__name__
    return getattr(tp, "__name__", str(tp))


def _check(value: Any, tp: Any) -> tuple[bool, Any]:
    """(does ``value`` fit ``tp``, the value converted: an int for a float field, a list for a tuple)."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _check(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    base = origin or tp
    if base is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number, float(value) if number else value
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if base is tuple:
        return isinstance(value, (list, tuple)), tuple(value) if isinstance(value, (list, tuple)) else value
    if base is list:
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, (list, tuple)) else value
    if isinstance(base, type):
        return isinstance(value, base), value
    return True, value


class Config:
    """Mixin for config dataclasses: checked construction, dict / JSON round trip, overrides."""

    label: ClassVar[str] = "config"  # names the config in messages and in --config FILE sections

    def __post_init__(self) -> None:
        self.check_types(type(self).__name__)
        self.validate()

    def validate(self) -> None:
        """Checks beyond types (ranges, choices); subclasses override it. Runs on every construction."""

    def check_types(self, source: str) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            ok, value = _check(getattr(self, f.name), hints[f.name])
            if not ok:
                raise ConfigError(f"{source}: {self.label} key {f.name!r} must be {_type_name(hints[f.name])}, "
                                  f"got {getattr(self, f.name)!r}")
            object.__setattr__(self, f.name, value)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> Any:
        """``cls(**d)`` with unknown keys and wrong types reported as one ``ConfigError`` naming ``source``."""
        source = source or cls.__name__
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object of {cls.label} settings, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.keys()))
        if unknown:
            raise ConfigError(f"{source}: unknown {cls.label} key(s) {', '.join(map(repr, unknown))}")
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):  # fill defaults first so the type check can name the source
            if f.name in d:
                value = d[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                raise ConfigError(f"{source}: missing {cls.label} key {f.name!r}")
            object.__setattr__(obj, f.name, value)
        obj.check_types(source)
        obj.validate()
        return obj

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, source: str = "override", **changes: Any) -> Any:
        """A new config with ``changes`` applied, checked like ``from_dict``."""
        return type(self).from_dict({**self.to_dict(), **changes}, source)


def parse_value(text: str) -> Any:
    """A ``key=value`` override's value: JSON where it parses, else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"setting {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def load_config_file(path: str | Path, sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object of settings: flat keys, or sections named in ``sections`` (e.g. "model", "train")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    flat = {k: v for k, v in d.items() if k not in sections}
    for s in sections:
        part = d.get(s, {})
        if not isinstance(part, dict):
            raise ConfigError(f"{path}: section {s!r} must be a JSON object")
        flat.update(part)
    return flat


def read_settings(config_file: str | Path | None, overrides: list[str] | None,
                  sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """``--config FILE`` then ``key=value`` overrides (the latter win)."""
    settings = load_config_file(config_file, sections) if config_file else {}
    settings.update(parse_overrides(overrides))
    return settings


def split_settings(settings: dict[str, Any], *classes: type[Config], source: str = "settings") -> list[dict]:
    """Route each key to the first of ``classes`` that has it; a key none has is an error."""
    parts: list[dict[str, Any]] = [{} for _ in classes]
    for k, v in settings.items():
        for part, cls in zip(parts, classes):
            if k in cls.keys():
                part[k] = v
                break
        else:
            labels = " or ".join(c.label for c in classes)
            raise ConfigError(f"{source}: unknown key {k!r} (not a {labels} setting)")
    return parts
