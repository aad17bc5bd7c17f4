"""Weight soups: interpolate / average state dicts and stream a soup of safetensors checkpoints to disk.

Streaming: output shards are written one at a time and each tensor is read from each input checkpoint on its
own (``safe_open``), so memory holds one output shard plus one tensor per input, never whole models.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import UsageError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


# weights are mixed, never copied; pickles are never carried over; cards and reports describe other models
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl")
_NOT_COPIED = {"README.md", "unlearning_report.json", "stage_complete.json"}  # the index is kept: shards mirror the first input


class SoupError(UsageError, ValueError):
    """Checkpoints that cannot be mixed: different keys, shapes or dtypes, or non-safetensors weights."""


def _check_weights(weights: Sequence[float], n: int) -> list[float]:
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise SoupError(f"{n} checkpoints but {len(weights)} weights")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise SoupError(f"soup weights must sum to 1, got {sum(weights)}")
    return weights


def _mix(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted sum in float32 (exact at weight 0/1), cast back; integer/bool buffers come from the first input."""
    first = tensors[0]
    if not first.is_floating_point():
        return first.clone()
    if 1.0 in weights:  # bit-exact copy, not a float sum that could round
        return tensors[list(weights).index(1.0)].clone()
    acc = torch.zeros_like(first, dtype=torch.float32)
    for t, w in zip(tensors, weights):
        if w:
            acc.add_(t.to(torch.float32), alpha=w)
    return acc.to(first.dtype)


def _check_compatible(metas: Sequence[dict[str, tuple]], names: Sequence[str]) -> None:
    """Every tensor of the first input is in the others with its shape and dtype; keys only the others have (the
    persistent ``position_ids`` buffers of older Hub CLIP checkpoints) are not mixed: the soup mirrors the first."""
    for meta, name in zip(metas[1:], names[1:]):
        missing = sorted(set(metas[0]) - set(meta))
        if missing:
            raise SoupError(f"checkpoint {name!r} lacks tensors of {names[0]!r}: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for key in metas[0]:
            if meta[key] != metas[0][key]:
                raise SoupError(f"tensor {key!r}: {names[0]!r} has (shape, dtype) {metas[0][key]}, {name!r} has {meta[key]}")


def check_soup_inputs(model_state: dict[str, torch.Tensor], original_folder: str) -> None:
    """Before training: the original's safetensors hold every tensor the trained model will save, with its shape and
    dtype, so the restore soup cannot fail after all the training."""
    model_meta = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model_state.items()}
    original = {k: (shape, _DTYPES.get(dtype, dtype.lower())) for k, (shape, dtype) in _metadata(checkpoint_files(original_folder)).items()}
    _check_compatible([model_meta, original], ["the model to unlearn", original_folder])


_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64", "I32": "int32", "BOOL": "bool"}


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None) -> dict:
    """In-memory weighted average of compatible state dicts (uniform weights by default)."""
    weights = _check_weights(weights or [1 / len(state_dicts)] * len(state_dicts), len(state_dicts))
    metas = [{k: (tuple(v.shape), str(v.dtype)) for k, v in sd.items()} for sd in state_dicts]
    _check_compatible(metas, [f"state_dict[{i}]" for i in range(len(state_dicts))])
    return {k: _mix([sd[k] for sd in state_dicts], weights) for k in state_dicts[0]}


def interpolate_state_dicts(unlearned: dict, original: dict, alpha: float) -> dict:
    """theta = alpha * unlearned + (1 - alpha) * original (WiSE-FT); integer buffers from ``unlearned``."""
    return average_state_dicts([unlearned, original], [alpha, 1 - alpha])


# ---- files ---------------------------------------------------------------------------------------------

def checkpoint_files(folder: str) -> dict[str, str]:
    """Tensor name -> safetensors file for a (possibly sharded) checkpoint folder; refuses pickled weights."""
    index = os.path.join(folder, INDEX_NAME)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return {k: os.path.join(folder, v) for k, v in weight_map.items()}
    single = os.path.join(folder, WEIGHTS_NAME)
    if os.path.exists(single):
        with safe_open(single, "pt") as f:
            return {k: single for k in f.keys()}
    raise SoupError(f"no {WEIGHTS_NAME} or {INDEX_NAME} in {folder!r}; only safetensors checkpoints can be mixed")


def weights_digest(folder: str) -> str:
    """SHA-256 over the bytes of a checkpoint folder's safetensors files: what caches of a model's results key on."""
    digest = hashlib.sha256()
    for path in sorted(set(checkpoint_files(folder).values())):
        stat = os.stat(path)
        digest.update(_file_sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns))
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> bytes:
    """A file's SHA-256, hashed once per process while its size and mtime stay: a run keys the original's predictions
    and its audit on the same weights, and a checkpoint of several GB takes seconds to hash."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def load_checkpoint(folder: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint folder, on the CPU."""
    out = {}
    for path in sorted(set(checkpoint_files(folder).values())):
        out.update(load_file(path, device="cpu"))
    return out


def _metadata(files: dict[str, str]) -> dict[str, tuple]:
    meta = {}
    for path in sorted(set(files.values())):
        with safe_open(path, "pt") as f:
            for key in f.keys():
                if files.get(key) == path:
                    sl = f.get_slice(key)
                    meta[key] = (tuple(sl.get_shape()), sl.get_dtype())
    return meta


def soup_checkpoints(folders: Sequence[str], weights: Sequence[float], output_dir: str) -> str:
    """Stream a weighted soup of HF checkpoint folders into ``output_dir`` (sharded like the first input).

    Everything is checked before a byte is written; configs and other non-weight files come from the first folder.
    """
    weights = _check_weights(weights, len(folders))
    maps = [checkpoint_files(f) for f in folders]
    _check_compatible([_metadata(m) for m in maps], list(folders))
    os.makedirs(output_dir, exist_ok=True)
    shards: dict[str, list[str]] = {}
    for key, path in maps[0].items():
        shards.setdefault(os.path.basename(path), []).append(key)
    for shard_name, keys in shards.items():
        out = {}
        for key in keys:
            tensors = []
            for m in maps:
                with safe_open(m[key], "pt") as f:
                    tensors.append(f.get_tensor(key))
            out[key] = _mix(tensors, weights)
            del tensors
        save_file(out, os.path.join(output_dir, shard_name), metadata={"format": "pt"})
        del out
    for name in os.listdir(folders[0]):
        src = os.path.join(folders[0], name)
        if os.path.isfile(src) and not name.endswith(_NOT_COPIED_SUFFIXES) and name not in _NOT_COPIED:
            shutil.copy2(src, os.path.join(output_dir, name))
    return output_dir
