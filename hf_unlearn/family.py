"""CLIP-family dual encoders: which class loads a checkpoint, how prompts are tokenised, the logits and keep-loss.

CLIP is trained with a softmax (InfoNCE) loss; SigLIP with a pairwise sigmoid loss, a learned bias, and prompts
padded to a fixed length. Everything that differs between the two lives here; the rest of the code asks.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoProcessor, CLIPModel, SiglipModel

from . import losses
from .checks import ModelError, check_model_path

MODEL_CLASSES = {"clip": CLIPModel, "siglip": SiglipModel}
PROCESSOR_CLASSES = {"clip": "CLIPProcessor", "siglip": "SiglipProcessor"}


# transformers loads "hub kernels" (compiled code from the Hub) by default where the `kernels` package is installed and
# a GPU is used; like remote code they are never loaded, and offline their fetch fails at the first model.eval().
NO_REMOTE_CODE = dict(trust_remote_code=False, use_kernels=False)


def _clip_config(name_or_path: str):
    check_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a model config from {name_or_path!r}: {err}") from err
    if config.model_type not in MODEL_CLASSES:
        raise ModelError(f"{name_or_path!r} is a {config.model_type!r} model, not a CLIP dual encoder; supported model types: {tuple(MODEL_CLASSES)}")
    return config


def load_processor(name_or_path: str, config=None):
    """A CLIP dual encoder's processor alone (no weights), checked to be the kind its model was trained with."""
    config = config or _clip_config(name_or_path)
    processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=False)
    expected = PROCESSOR_CLASSES[config.model_type]
    if type(processor).__name__ != expected:
        raise ModelError(f"{name_or_path!r} is a {config.model_type!r} model but its processor is a {type(processor).__name__}; "
                         f"it needs a {expected} (the image preprocessing and prompt tokenisation the model was trained with)")
    return processor


def load_model(name_or_path: str, attn_implementation: str | None = None, config=None):
    """The model alone (safetensors only, no remote code, no hub kernels), for a local folder or a Hub id."""
    config = config or _clip_config(name_or_path)
    try:
        return MODEL_CLASSES[config.model_type].from_pretrained(
            name_or_path, use_safetensors=True, attn_implementation=attn_implementation, **NO_REMOTE_CODE)
    except OSError as err:
        raise ModelError(f"cannot load safetensors weights from {name_or_path!r} (pickled weights are never loaded): {err}") from err


def load_clip(name_or_path: str, attn_implementation: str | None = None):
    """The model and its processor (``load_model``, ``load_processor``)."""
    config = _clip_config(name_or_path)
    return load_model(name_or_path, attn_implementation, config), load_processor(name_or_path, config)


def weights_folder(name_or_path: str) -> str:
    """The folder holding a checkpoint's safetensors files (for a Hub id, its already downloaded snapshot)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    from huggingface_hub import snapshot_download

    return snapshot_download(name_or_path, allow_patterns=["*.safetensors", "*.json", "*.txt"])


def is_sigmoid(model) -> bool:
    return getattr(model.config, "model_type", "clip") == "siglip"


def text_kwargs(model) -> dict:
    """Tokeniser settings the family was trained with (SigLIP: padded to the full length, no attention mask)."""
    max_length = model.config.text_config.max_position_embeddings
    if is_sigmoid(model):
        return dict(padding="max_length", truncation=True, max_length=max_length)
    return dict(padding=True, truncation=True, max_length=max_length)


def tokenize(model, tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    tokens = tokenizer(texts, return_tensors="pt", **text_kwargs(model))
    keep = ("input_ids",) if is_sigmoid(model) else ("input_ids", "attention_mask")
    return {k: v for k, v in tokens.items() if k in keep}


def logit_scale_and_bias(model) -> tuple[float, float]:
    bias = float(model.logit_bias.reshape(-1)[0]) if is_sigmoid(model) else 0.0
    return float(model.logit_scale.exp()), bias


def forward_embeds(model, pixel_values: torch.Tensor, prompt_tokens: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm image and text embeddings from one call of ``model.forward``.

    Going through ``forward`` (not ``get_image_features``) is what lets a DDP / FSDP wrapper see the step and
    synchronise gradients; the prompt bank is small, so encoding it every step costs little.
    """
    out = model(pixel_values=pixel_values, **prompt_tokens, return_dict=True)
    return F.normalize(out.image_embeds.float(), dim=-1), F.normalize(out.text_embeds.float(), dim=-1)


def keep_loss(model, logits: torch.Tensor, labels: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
    """The family's own image-to-class-text loss: softmax cross-entropy (CLIP) or pairwise sigmoid (SigLIP)."""
    if is_sigmoid(model):
        return losses.class_sigmoid_loss(logits + bias, labels)
    return losses.class_contrastive_loss(logits, labels)
