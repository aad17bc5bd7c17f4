"""The one place that knows prompt templates, and the zero-shot head built from them.

Training and calibration use ``TRAIN_TEMPLATES``; reported accuracies use ``EVAL_TEMPLATES``, a disjoint set,
so a model cannot look forgotten merely because the phrasings it was trained against changed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import precision

TRAIN_TEMPLATES = ("a picture of a {}.", "a {}.", "an image of a {}.", "a {} in a picture.")
# The common CLIP evaluation protocol: "a {domain} of a {class}." averaged over domain words.
EVAL_TEMPLATES = ("a photo of a {}.", "a painting of a {}.", "a cartoon of a {}.", "a sketch of a {}.")


def class_prompt_name(name: str) -> str:
    return name.replace("_", " ")


def features(output) -> torch.Tensor:
    """Projected embeddings from ``get_*_features`` (a tensor in transformers 4, a model output in 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def inference_batch_size(device: torch.device | str) -> int:
    """Images per no-grad forward: 64 on CPU, where a smaller batch's activations stay in the cache (1.6x the
    images per second of 256 for mini-clip-64, benchmarks/inference_batch.py), 256 on accelerators."""
    return 64 if torch.device(device).type == "cpu" else 256


def encode_images(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Unit-norm float32 image embeddings of one batch; the caller decides on grad, device and autocast."""
    return F.normalize(features(model.get_image_features(pixel_values=pixel_values)).float(), dim=-1)


def encode_text(model, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Unit-norm text embeddings; the caller decides on grad."""
    from .family import tokenize

    chunks = []
    device = next(model.parameters()).device
    for i in range(0, len(texts), batch_size):
        tokens = {k: v.to(device) for k, v in tokenize(model, tokenizer, texts[i : i + batch_size]).items()}
        with precision.autocast(device):
            chunks.append(F.normalize(features(model.get_text_features(**tokens)).float(), dim=-1))
    return torch.cat(chunks)


@torch.no_grad()
def class_text_embeddings(model, tokenizer, class_names: list[str], templates=TRAIN_TEMPLATES) -> torch.Tensor:
    """Zero-shot head: per class, the normalised mean of its template embeddings (``[num_classes, dim]``)."""
    texts = [t.format(class_prompt_name(c)) for c in class_names for t in templates]
    emb = encode_text(model, tokenizer, texts).view(len(class_names), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)
