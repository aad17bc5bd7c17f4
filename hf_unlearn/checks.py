"""Checking settings: types and ranges of dataclass fields, each error naming the flag, the value and what is allowed;
the retention bars' parser and the model path check. Nothing here imports torch: the command line runs every check
before the run's modules load."""
from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing

from .errors import UsageError


class ConfigError(UsageError, ValueError):
    """A setting outside its allowed range or of the wrong type; raised before anything loads."""


def split_list(value: str | None, sep: str = ",") -> list[str]:
    return [v.strip() for v in (value or "").split(sep) if v.strip()]


def with_help(text: str, **extra) -> dict:
    return {"help": text, **extra}


def _type_ok(value, hint) -> bool:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in options:
        if t is type(None) and value is None:
            return True
        if t is bool and isinstance(value, bool):
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t is str and isinstance(value, str):
            return True
        if t not in (type(None), bool, int, float, str):  # anything richer (TrainingArguments' own) is not ours to check
            return True
    return False


class Checked:
    """Type and range checks of the settings a class declares, run by ``__post_init__``: a field's ``gt=0``
    metadata, and each group's ``check(self)``; a trainer config that mixes groups in runs all of them after
    TrainingArguments' own."""

    def __post_init__(self):
        parent = super()
        if hasattr(parent, "__post_init__"):
            parent.__post_init__()
        for cls in reversed(type(self).__mro__):
            if not cls.__module__.startswith("hf_unlearn") or not dataclasses.is_dataclass(cls):
                continue
            for name, hint in _own_hints(cls).items():
                if not _type_ok(getattr(self, name), hint):
                    raise ConfigError(f"--{name} {getattr(self, name)!r}: must be {_type_name(hint)}")
            positive(self, *vars(cls).get("_positive", ()))
            if "check" in vars(cls):
                vars(cls)["check"](self)


def _own_hints(cls) -> dict:
    """The annotations a class itself declares, evaluated (they are strings under ``from __future__ import annotations``)."""
    scope = vars(sys.modules[cls.__module__])
    return {k: eval(v, scope) if isinstance(v, str) else v for k, v in vars(cls).get("__annotations__", {}).items()}


def _type_name(hint) -> str:
    names = [getattr(t, "__name__", str(t)) for t in (typing.get_args(hint) or (hint,))]
    return " or ".join("none" if n == "NoneType" else n for n in names)


def require(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"--{name} {value!r}: must be {allowed}")


def choice(self, name: str, options) -> None:
    value = getattr(self, name)
    if value not in options:
        raise ConfigError(f"unknown {name} {value!r} (--{name}); choices: {', '.join(map(str, options))}")


def positive(self, *names):
    for n in names:
        require(getattr(self, n) > 0, n, getattr(self, n), "> 0")


def non_negative(self, *names):
    for n in names:
        require(getattr(self, n) >= 0, n, getattr(self, n), ">= 0")


def parse_dataclasses(parser, argv=None) -> tuple:
    """``parser.parse_args_into_dataclasses`` where an unknown flag is argparse's one-line usage error (exit 2),
    not HfArgumentParser's traceback."""
    *groups, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return tuple(groups)


RETENTION_KEYS = ("RA", "OA", "ZS")  # ZS: the bar for each held-out zero-shot set


def parse_retention_bars(text: str) -> dict[str, float]:
    """``"RA=0.98,OA=0.99,ZS=0.99"`` -> ``{"RA": 0.98, ...}``; ValueError naming the part that is not ``KEY=fraction``."""
    bars = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key.strip() not in RETENTION_KEYS:
            raise ValueError(f"{part!r}: the key must be one of {', '.join(RETENTION_KEYS)}")
        try:
            bars[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: the bar must be a fraction, as in RA=0.98") from None
        if not 0 <= bars[key.strip()] <= 1:
            raise ValueError(f"{part!r}: the bar must be in [0, 1]")
    return bars


class ModelError(UsageError, ValueError):
    """A checkpoint that is not a CLIP-family dual encoder, or has no safetensors weights."""


def looks_local(name: str) -> bool:
    """A name meant as a local path rather than a Hub id ('org/name' or 'name')."""
    return name.startswith((".", "/", "~")) or os.sep + os.sep in name or name.count("/") > 1 or name.endswith("/")


def check_model_path(name_or_path: str) -> None:
    """Fail at once on a local model path that does not exist (a Hub id is checked when it loads)."""
    if looks_local(name_or_path) and not os.path.exists(name_or_path):
        raise ModelError(f"model path {name_or_path!r} does not exist (a local path: it starts with '.', '/' or '~', or names a folder)")
