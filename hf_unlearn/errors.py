"""The project's own errors: the command line ends each in one line, never a traceback. Nothing here imports torch,
so a bad flag's line does not wait for it."""
from __future__ import annotations


class UsageError(Exception):
    """A bad input or a clear failure the user can act on: ``hf_unlearn: error: <message>``, exit code 2. Each
    subclass also derives from the built-in error it is a kind of (``ValueError``, ``FileExistsError``, ...)."""


class ForgettingIncompleteError(RuntimeError):
    """The run finished and saved its model, but did not achieve what it was asked: the subgroup was not forgotten
    (or, as required, not deeply, or retention was lost; ``report`` says by how much)."""

    def __init__(self, message: str, report: dict, headline: str = "FORGETTING FAILED"):
        super().__init__(message)
        self.report, self.headline = report, headline
