"""The phrasing attack's bank (``phrasings.txt``, or a user's ``--audit_phrasings``): read and checked without torch,
so a flag naming a bad file is refused before any model loads."""
from __future__ import annotations

import os

from ..checks import ConfigError

BANK_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "phrasings.txt")


def load_bank(path: str = BANK_PATH) -> list[str]:
    with open(path) as f:
        bank = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    bad = [p for p in bank if p.count("{}") != 1]
    if bad:
        raise ConfigError(f"--audit_phrasings {path}: each phrasing needs exactly one '{{}}' for the class name: {bad[:3]}")
    return bank
