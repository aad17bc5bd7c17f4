"""Where a run writes: the output folder's checks, the staging folder it builds in, and the atomic publish.

A run builds everything in ``<output_dir>.incomplete`` and renames it to ``output_dir`` only when complete, so a
crash never leaves a half-written model folder, and an old result is replaced only after the new one is whole.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable

from .errors import UsageError
from .spec import SubgroupSpec


class OutputExistsError(UsageError, FileExistsError):
    pass


class OutputPathError(UsageError, ValueError):
    """An output folder that cannot be written: a file in its place or above it, or no write permission."""


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Before anything loads: ``output_dir`` can be created and written, and replaces a result only if asked."""
    if os.path.isfile(output_dir):
        raise OutputPathError(f"--output_dir {output_dir!r} is a file, not a folder; choose another --output_dir")
    if os.path.exists(output_dir) and os.listdir(output_dir) and not overwrite:
        raise OutputExistsError(f"output folder {output_dir!r} already holds a result; pass --overwrite_output_dir or choose another --output_dir")
    parent = os.path.dirname(os.path.abspath(output_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputPathError(f"--output_dir {output_dir!r} is inside {parent!r}, which is a file; choose another --output_dir")
    try:  # a real write, not os.access: root passes permission checks but not a read-only file system
        os.rmdir(tempfile.mkdtemp(prefix=".hf_unlearn-probe-", dir=parent))
    except OSError as err:
        raise OutputPathError(f"--output_dir {output_dir!r}: cannot write in {parent!r} ({err.strerror}); choose another --output_dir") from None


def check_not_an_input(output_dir: str, inputs: list[tuple[str, str | None]]) -> None:
    """``output_dir`` is not, inside or around a local input (``(flag, path)`` pairs): publishing the result replaces
    the output folder, which would delete the model or data the run was made from."""
    out = os.path.realpath(output_dir)
    for flag, path in inputs:
        if not path or not os.path.exists(path):
            continue  # a Hub id: nothing local to overwrite
        src = os.path.realpath(path)
        if out == src or src.startswith(out + os.sep) or out.startswith(src + os.sep):
            relation = "is" if out == src else ("holds" if src.startswith(out + os.sep) else "is inside")
            raise OutputPathError(f"--output_dir {output_dir!r} {relation} the {flag} folder {path!r}: publishing the result would "
                                  "replace what the run reads; choose another --output_dir")


def write_atomically(path: str, save: Callable[[str], None]) -> None:
    """``save(tmp)``, then ``tmp`` renamed onto ``path``: a reader finds the old file or the whole new one. The name is
    per process, so two processes writing the same path never share a temporary file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    save(tmp)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    def save(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    write_atomically(path, save)


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON at ``path``, written whole or not at all."""
    write_text(path, json.dumps(obj, indent=2, default=str))


def default_output_dir(dataset: str | None, forget: str | None) -> str:
    name = os.path.basename(os.path.normpath(dataset or "demo"))
    tag = "-".join(v for _, v in SubgroupSpec.parse(forget).conditions) if forget else "default"
    return os.path.join("runs", f"{name}-{tag}".replace("/", "_"))


def staging_folder(output_dir: str) -> str:
    """Where a run builds its outputs before they are moved into ``output_dir``; it exists while a run is unfinished."""
    return os.path.normpath(output_dir) + ".incomplete"


def clear_final_files(staging: str) -> None:
    """Remove everything but the stage checkpoints, so a rerun rewrites the final model, card and report."""
    for name in os.listdir(staging):
        if name != "stages":
            path = os.path.join(staging, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def previous_folder(output_dir: str) -> str:
    """Where ``publish`` sets the old result aside while the new one moves in; a name of the project's own, so that
    recovering from a killed publish never touches a folder the user made (a ``<output_dir>.old`` of theirs)."""
    return os.path.normpath(output_dir) + ".hf_unlearn-previous"


def recover_publish(output_dir: str) -> None:
    """Undo what a publish killed midway left: killed between its two renames, the old result waits in
    ``previous_folder`` (the new one is still staged), and is put back; killed after both, the leftover is removed.
    Called before a run checks or reads ``output_dir``, and by ``publish`` itself."""
    old = previous_folder(output_dir)
    if not os.path.exists(old):
        return
    if os.path.exists(output_dir):
        shutil.rmtree(old)
    else:
        os.replace(old, output_dir)


def publish(staging: str, output_dir: str, overwrite: bool) -> None:
    """Atomically move the finished run into place; an old result is removed only after the move succeeded. A kill
    at any point leaves the old result, or the new one, at ``output_dir`` once ``recover_publish`` has run."""
    recover_publish(output_dir)
    old = None
    if os.path.exists(output_dir):
        check_output_dir(output_dir, overwrite)
        old = previous_folder(output_dir)
        os.replace(output_dir, old)
    os.replace(staging, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
