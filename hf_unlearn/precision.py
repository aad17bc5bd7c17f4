"""Compute precision: bf16 autocast where the hardware runs it fast, float32 elsewhere. Weights stay float32.

On CPUs with bf16 arithmetic (AMX, or AVX512-BF16 as on AMD Zen 4), bf16 autocast with eager attention runs a
small ViT 2-4x faster in training and 2-10x in inference than float32 (measured in docs/BENCHMARKS.md); on CPUs
that emulate it bf16 is slower, so ``auto`` checks first. On CPU, eager attention beats SDPA in either precision,
hence eager there.
"""
from __future__ import annotations

import contextlib

import torch


def bf16_fast(device: torch.device | str = "cpu") -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        native = any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
        return bool(native and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def use_bf16(precision: str, device: torch.device | str = "cpu") -> bool:
    """Whether ``precision`` (``auto`` | ``bf16`` | ``fp32``) means bf16 autocast on ``device``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return bf16_fast(device) if precision == "auto" else precision == "bf16"


def attn_implementation(device: torch.device | str = "cpu") -> str | None:
    return "eager" if torch.device(device).type == "cpu" else None


_STATE = {"bf16": False}


def enabled() -> bool:
    """Whether inference autocasts to bf16 (what ``set_default`` chose)."""
    return _STATE["bf16"]


def set_default(bf16: bool) -> None:
    """The precision ``autocast()`` uses for inference (evaluation, Fisher scores, teacher caches)."""
    _STATE["bf16"] = bool(bf16)


def autocast(device: torch.device | str = "cpu"):
    if not _STATE["bf16"]:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
