"""The command line and YAML recipes, both derived from the settings' declarations in ``config.py``.

``--help`` has one section per settings group. A YAML recipe holds the same names, flat or nested by section
(``forget_stage: {forget_learning_rate: 1e-3}``); its values are parsed exactly like flags, and flags given on the
command line override it.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
import warnings

import yaml

from . import config as cfg
from .config import ALIASES, GROUPS, UnlearnArguments
from .errors import ForgettingIncompleteError, UsageError

SECTIONS = {
    "run": cfg.RunArguments, "data": cfg.DatasetArguments, "training_data": cfg.DataArguments, "search": cfg.MethodArguments, "selection": cfg.SelectionArguments,
    "ablations": cfg.AblationArguments, "distill": cfg.DistillArguments, "forget_stage": cfg.ForgetArguments,
    "remind_stage": cfg.RemindArguments, "baselines": cfg.BaselineArguments, "restore": cfg.RestoreArguments, "audit": cfg.AuditArguments,
    "compute": cfg.ComputeArguments,
}


def build_parser():
    from transformers import HfArgumentParser  # here: importing transformers takes a second, and until console() runs a Ctrl-C is a traceback

    parser = HfArgumentParser(GROUPS, usage="%(prog)s [--config RECIPE.yaml] [--setting VALUE ...]",
                              description="Make a CLIP model forget one image subgroup: forget -> remind -> restore.")
    parser.add_argument("--config", default=None, help="YAML recipe of these settings (flat, or nested by section); flags override it.")
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of an error.")
    return parser


def _field_names(group) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(group)}


def yaml_flags(path: str) -> list[str]:
    """A YAML recipe as command-line tokens, so its values are type-checked and converted like flags."""
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise cfg.ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    flat = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            unknown = sorted(set(value) - _field_names(SECTIONS[key]) - {a for a, n in ALIASES.items() if n in _field_names(SECTIONS[key])})
            if unknown:
                raise cfg.ConfigError(f"{path}: unknown keys {unknown} in section {key!r}; valid: {sorted(_field_names(SECTIONS[key]))}")
            flat.update(value)
        else:
            flat[key] = value
    known = _field_names(UnlearnArguments) | set(ALIASES)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise cfg.ConfigError(f"{path}: unknown keys {unknown}; valid keys: {sorted(known)}, or sections {sorted(SECTIONS)}")
    tokens = []
    for key, value in flat.items():
        if isinstance(value, (list, dict)):
            raise cfg.ConfigError(f"{path}: {key}: expected a single value, got {value!r}")
        if value is not None:
            tokens += [f"--{ALIASES.get(key, key)}", str(value).lower() if isinstance(value, bool) else str(value)]
    return tokens


def parse_args(argv: list[str] | None = None) -> UnlearnArguments:
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config and not os.path.isfile(known.config):
        raise cfg.ConfigError(f"--config {known.config!r}: no such recipe file")
    tokens = (yaml_flags(known.config) if known.config else []) + argv
    namespace = vars(build_parser().parse_args(tokens))
    namespace.pop("config"), namespace.pop("debug")
    return UnlearnArguments(**namespace)


def main(argv: list[str] | None = None) -> dict:
    """Parse, run, return the report; errors propagate (``console`` is the command-line entry)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for category in (FutureWarning, DeprecationWarning):  # the libraries' own deprecations: nothing a user can act on
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|peft|accelerate|datasets|torch)\.")
    args = parse_args(argv)  # before the run's modules load: a bad flag's line comes in about a second, not ten
    from .pipeline import unlearn

    return unlearn(args)


EXIT_IO, EXIT_USAGE, EXIT_NOT_FORGOTTEN, EXIT_INTERRUPTED = 1, 2, 3, 130
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)  # a full or read-only disk


def console(argv: list[str] | None = None) -> None:
    """``hf-unlearn`` and ``recipes/forget_remind_restore.py``: the project's own errors end in one line,
    ``hf_unlearn: error: ...``, and exit code 2 (the traceback with ``--debug``); a run that saved its model but did
    not forget (or, as required, not deeply, or lost retention) exits 3."""
    argv = sys.argv[1:] if argv is None else list(argv)
    interrupted = _InterruptWatch()
    try:
        with interrupted:
            main(argv)  # the run's modules (torch, transformers, datasets) are imported in here, so a Ctrl-C while they load is caught too
    except ForgettingIncompleteError as err:
        print(f"\n{'!' * 100}\nhf_unlearn: {err.headline}: {err}\n{'!' * 100}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_FORGOTTEN) from None
    except UsageError as err:
        _fail(argv, f"hf_unlearn: error: {err}", EXIT_USAGE)
    except KeyboardInterrupt:
        _fail(argv, INTERRUPTED, EXIT_INTERRUPTED)
    except Exception as err:
        if interrupted.seen:
            _fail(argv, INTERRUPTED, EXIT_INTERRUPTED)
        if not _write_failure(err):
            raise
        _fail(argv, f"hf_unlearn: error: cannot write: {_write_detail(err)}. Nothing was published; finished stages are kept for a rerun", EXIT_IO)


INTERRUPTED = ("hf_unlearn: interrupted. Finished stages and the running stage's last checkpoint are kept in <output_dir>.incomplete; "
               "rerun the same command with --resume_from_checkpoint to continue")


class _InterruptWatch:
    """Remembers a Ctrl-C while the run goes on: a library can turn the KeyboardInterrupt raised inside it into its own
    error (safetensors' reader raises "ValueError: could not determine the shape of object type ..."), which must
    still end as an interruption, not a traceback. Only where Python's own SIGINT handler is installed (the main thread
    of a process that does not ignore SIGINT)."""

    def __init__(self):
        self.seen, self._previous = False, None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _write_failure(err: BaseException) -> bool:
    """A write that failed as on a full disk: an OSError with a disk errno, safetensors' I/O error, or torch.save's
    zip writer (the Trainer's optimizer state), which raises a RuntimeError from inline_container.cc instead."""
    from safetensors import SafetensorError

    if isinstance(err, OSError):
        return err.errno in WRITE_ERRNOS
    if isinstance(err, SafetensorError):
        return "I/O error" in str(err)
    return isinstance(err, RuntimeError) and "inline_container.cc" in str(err)


def _write_detail(err: BaseException) -> str:
    """What a failed write (``_write_failure``) says, in a line."""
    detail = str(err).strip().splitlines()[0]
    return f"a checkpoint file stopped mid-write, as on a full disk ({detail})" if isinstance(err, RuntimeError) else detail


def one_line_errors(entry, argv: list[str] | None = None) -> None:
    """``python -m hf_unlearn.audit`` and ``python -m hf_unlearn.eval_cli``: ``entry(argv)`` with the project's own errors
    (a bad value, a missing model or dataset) in one line and exit code 2, a Ctrl-C in one line and 130, a full disk
    in one line and 1, as the recipe's. Their files are written whole or not at all, so an interruption leaves none
    half-written."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        entry(argv)
    except UsageError as err:
        _fail(argv, f"hf_unlearn: error: {err}", EXIT_USAGE)
    except KeyboardInterrupt:
        _fail(argv, "hf_unlearn: interrupted. Nothing is half-written; rerun the same command (cached results are reused)", EXIT_INTERRUPTED)
    except Exception as err:
        if not _write_failure(err):
            raise
        _fail(argv, f"hf_unlearn: error: cannot write: {_write_detail(err)}", EXIT_IO)


def _fail(argv: list[str], line: str, code: int) -> None:
    if "--debug" in argv:
        raise
    line = " ".join(part.strip() for part in line.splitlines() if part.strip())  # a library's message may span lines
    print(f"\n{line}", file=sys.stderr)  # on a line of its own, even after a progress bar
    raise SystemExit(code) from None
