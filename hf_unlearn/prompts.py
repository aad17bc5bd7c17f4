"""The one place that knows prompt templates, and the zero-shot head built from them.

Training and calibration use ``TRAIN_TEMPLATES``; reported accuracies use ``EVAL_TEMPLATES``, a disjoint set,
so a model cannot look forgotten merely because the phrasings it was trained against changed.
"""
from __future__ import annotations

import os
import random
import re

import torch
import torch.nn.functional as F

from . import precision

TRAIN_TEMPLATES = ("a picture of a {}.", "a {}.", "an image of a {}.", "a {} in a picture.")
# The common CLIP evaluation protocol: "a {domain} of a {class}." averaged over domain words.
EVAL_TEMPLATES = ("a photo of a {}.", "a painting of a {}.", "a cartoon of a {}.", "a sketch of a {}.")


# What ``compose_phrasings`` draws from: each a zero-shot template once filled in ("{}" is the class name).
_MEDIA = ("photo", "picture", "image", "sketch", "drawing", "painting", "cartoon", "illustration", "photograph", "snapshot",
          "rendering", "doodle", "artwork", "print", "portrait", "depiction", "scan", "still", "clip art", "graphic")
_ADJECTIVES = ("", "small", "big", "clear", "blurry", "old", "simple", "detailed", "colorful", "black and white", "hand-drawn",
               "quick", "nice", "strange", "cute", "realistic", "rough", "faded", "bright", "dark", "tiny", "famous", "pencil",
               "digital", "vintage", "cropped", "grainy", "sharp", "weird", "plain")
_LEADS = ("", "this is", "here is", "there is", "i see", "look at", "we have", "you see", "it is", "that is")
_STRUCTURES = ("{lead} a {adj} {medium} of a {}.", "{lead} a {} in a {adj} {medium}.", "{lead} a {adj} {medium} showing a {}.",
               "{lead} a {} {medium}.", "{lead} a {adj} {}.", "{lead} the {adj} {medium} of the {}.", "{lead} a {medium} with a {} in it.")
_ARTICLES = {"a", "an", "the"}


def phrasing_key(template: str) -> tuple[str, ...]:
    """A template's words without articles or punctuation: templates that differ only there ask the same question."""
    words = "".join(c if c.isalnum() or c in "{} " else " " for c in template.lower()).split()
    return tuple(w for w in words if w not in _ARTICLES)


def compose_phrasings(held_out=(), size: int = 512, seed: int = 0) -> list[str]:
    """A bank of ``size`` zero-shot templates composed from lead-ins, adjectives, media words and word orders, drawn
    with ``seed``; none has the ``phrasing_key`` of a ``held_out`` template (the audit's bank, the reported ones),
    so training against it never trains against what the audit or the report asks."""
    banned = {phrasing_key(t) for t in held_out}
    out, seen = [], set()
    for structure in _STRUCTURES:
        for lead in _LEADS:
            for adj in _ADJECTIVES:
                for medium in _MEDIA if "{medium}" in structure else ("",):
                    text = " ".join(structure.replace("{lead}", lead).replace("{adj}", adj).replace("{medium}", medium).split())
                    text = re.sub(r"\ba (?=[aeiou])", "an ", text)
                    key = phrasing_key(text)
                    if key not in banned and key not in seen:
                        seen.add(key)
                        out.append(text)
    if len(out) < size:
        raise ValueError(f"only {len(out)} composed phrasings remain outside the held-out ones; asked for {size}")
    return sorted(random.Random(seed).sample(out, size))


def class_prompt_name(name: str) -> str:
    return name.replace("_", " ")


VOCABULARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabulary.txt")


def vocabulary(exclude=()) -> list[str]:
    """The generic vocabulary less ``exclude`` (class names, compared as prompt names, case-insensitive)."""
    drop = {class_prompt_name(n).strip().lower() for n in exclude}
    with open(VOCABULARY_PATH) as f:
        words = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [w for w in words if w.lower() not in drop]


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
def template_class_embeddings(model, tokenizer, class_names: list[str], templates) -> torch.Tensor:
    """One zero-shot head per template: unit-norm text embeddings ``[num_templates, num_classes, dim]``."""
    texts = [t.format(class_prompt_name(c)) for t in templates for c in class_names]
    return encode_text(model, tokenizer, texts).view(len(templates), len(class_names), -1)


@torch.no_grad()
def class_text_embeddings(model, tokenizer, class_names: list[str], templates=TRAIN_TEMPLATES) -> torch.Tensor:
    """Zero-shot head: per class, the normalised mean of its template embeddings (``[num_classes, dim]``)."""
    return F.normalize(template_class_embeddings(model, tokenizer, class_names, templates).mean(0), dim=-1)
