"""Compute precision: bf16 autocast where the hardware runs it fast, float32 elsewhere. Weights stay float32.

On CPUs with bf16 arithmetic (AMX, or AVX512-BF16 as on AMD Zen 4), bf16 autocast with eager attention runs a
small ViT 2-4x faster in training and 2-10x in inference than float32 (measured in docs/BENCHMARKS.md); on CPUs
that emulate it bf16 is slower, so ``auto`` checks first. On CPU, eager attention beats SDPA under autocast, hence
eager there for training. No-grad image inference under bf16 runs a bf16 copy of the weights instead
(``inference_model``): autocast re-casts every weight and activation on every call, the copy does not.
"""
from __future__ import annotations

import contextlib
import copy
import weakref

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


def inference_key() -> str:
    """How inference computes, for cache keys of results it produced (the original's predictions, probe embeddings)."""
    return "bf16 weights, sdpa" if _STATE["bf16"] else "fp32"


_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its weights' identity and versions, bf16 copy)


def inference_model(model):
    """The module no-grad image inference runs: under bf16, a bf16 copy of ``model`` with SDPA attention, kept until its
    weights change (in place or replaced); ``model`` itself under fp32 or when it is not a plain transformers model
    (a PEFT wrapper mid-training), which then runs under ``autocast``. The copy takes 0.77x autocast's time an image for
    mini-clip-64 on 2 AMX cores (docs/BENCHMARKS.md, "Inference on a bf16 copy")."""
    from transformers import PreTrainedModel

    if not _STATE["bf16"] or not isinstance(model, PreTrainedModel):
        return model
    version = tuple((p.data_ptr(), p._version) for p in model.parameters())
    known = _COPIES.get(model)
    if known is not None and known[0] == version:
        return known[1]
    twin = copy.deepcopy(model).to(torch.bfloat16).eval().requires_grad_(False)
    with contextlib.suppress(ValueError, ImportError):  # an architecture without SDPA keeps its attention
        twin.set_attn_implementation("sdpa")
    _COPIES[model] = (version, twin)
    return twin


def autocast(device: torch.device | str = "cpu"):
    if not _STATE["bf16"]:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
