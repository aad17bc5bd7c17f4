"""YAML recipe + command-line overrides -> ``UnlearnArguments`` (HfArgumentParser, TRL style)."""
from __future__ import annotations

import argparse
import dataclasses

import yaml
from transformers import HfArgumentParser

from .config import UnlearnArguments


def parse_args(argv: list[str] | None = None) -> UnlearnArguments:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(UnlearnArguments)
    parser.add_argument("--config", default=None, help="YAML file of UnlearnArguments; flags given on the command line override it.")
    if known.config:
        with open(known.config) as f:
            values = yaml.safe_load(f) or {}
        fields = {f.name for f in dataclasses.fields(UnlearnArguments)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown keys in {known.config}: {unknown}; valid keys: {sorted(fields)}")
        parser.set_defaults(**values)
    (args,) = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=False)[:1]
    return args


def main(argv: list[str] | None = None) -> dict:
    """``hf-unlearn`` console script: the same as ``recipes/forget_remind_restore.py``."""
    import logging
    import sys

    from .pipeline import unlearn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return unlearn(parse_args(sys.argv[1:] if argv is None else argv))
