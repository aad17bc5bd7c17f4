"""Every metric in one place: zero-shot accuracy per group, FA / RA / OA / ZS, fractions and the composite score.

FA: accuracy on the forget subgroup (lower is better); RA: its sibling subgroups; OA: the other classes of the
same dataset; ZS/<name>: held-out datasets never seen while unlearning. The benchmark and the report call this.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from . import precision
from .data import ImageSet
from .progress import progress
from .prompts import EVAL_TEMPLATES, class_text_embeddings, encode_images, inference_batch_size


@dataclass
class EvalSet:
    """Images of one dataset with named boolean row masks (``forget`` / ``retain`` / ``other`` or ``all``)."""

    name: str
    images: ImageSet
    class_names: list[str]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    subgroups: dict[str, torch.Tensor] = field(default_factory=dict)  # optional per-subgroup masks for tables


@torch.no_grad()
def embed_images(model, pixel_values: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Unit-norm float32 embeddings of ``pixel_values``, batched, on ``precision.inference_model(model)``."""
    was_training = model.training
    model.eval()
    runner = precision.inference_model(model)
    device, dtype = next(runner.parameters()).device, next(runner.parameters()).dtype
    batch_size = batch_size or inference_batch_size(device)
    with precision.autocast(device) if runner is model else contextlib.nullcontext():
        out = [
            encode_images(runner, pixel_values[i : i + batch_size].to(device, dtype)).cpu()
            for i in progress(range(0, len(pixel_values), batch_size), desc="embed images", disable_below=8)
        ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(pred: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    if mask is not None:
        pred, labels = pred[mask], labels[mask]
    return float((pred == labels).float().mean()) if len(labels) else float("nan")


METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", "unlearning")


@functools.cache
def unlearning_metric():
    """The package's ``evaluate`` module of the unlearning metrics (loaded from the package, offline)."""
    import evaluate

    return evaluate.load(METRIC_PATH)


@torch.no_grad()
def predict(model, tokenizer, s: EvalSet, templates=EVAL_TEMPLATES, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-shot class predictions of ``model`` on one set (the head built from ``templates``); ``image_embeds``: the
    set's image embeddings when already computed (the heads change, the images do not)."""
    heads = class_text_embeddings(model, tokenizer, s.class_names, templates).cpu()
    images = embed_images(model, s.images.pixel_values) if image_embeds is None else image_embeds
    return (images @ heads.t()).argmax(-1)


def score_sets(sets: list[EvalSet], predictions: list[torch.Tensor], subgroups: bool = False) -> dict:
    """``FA``/``RA``/``OA`` for group masks and ``ZS/<name>`` for held-out sets (the ``unlearning`` metric), and with
    ``subgroups`` ``group/<set>/<subgroup>`` for each set's subgroup masks."""
    preds, refs, groups, by_subgroup = [], [], [], {}
    for s, pred in zip(sets, predictions):
        group = np.full(len(pred), f"ZS/{s.name}", dtype=object)
        if s.masks:
            group[:] = ""
            for name, mask in s.masks.items():
                group[mask.numpy()] = name
        keep = group != ""
        preds += pred[keep].tolist()
        refs += s.images.labels[keep].tolist()
        groups += group[keep].tolist()
        if subgroups:
            for name, mask in s.subgroups.items():
                by_subgroup[f"group/{s.name}/{name}"] = accuracy(pred, s.images.labels, mask)
    metrics = unlearning_metric().compute(predictions=preds, references=refs, groups=groups) if groups else {}
    return {**metrics, **by_subgroup}


def evaluate_sets(model, tokenizer, sets: list[EvalSet], templates=EVAL_TEMPLATES, subgroups: bool = False,
                  image_embeds: list[torch.Tensor] = ()) -> dict:
    """Zero-shot accuracies of ``model`` on ``sets`` (``score_sets`` of its predictions); ``image_embeds``: the
    model's image embeddings of the first sets, in order, when already computed."""
    known = list(image_embeds) + [None] * (len(sets) - len(image_embeds))
    return score_sets(sets, [predict(model, tokenizer, s, templates, x) for s, x in progress(zip(sets, known), desc="evaluate", disable_below=2)],
                      subgroups)


def zero_shot_mean(metrics: dict) -> float | None:
    values = [v for k, v in metrics.items() if k.startswith("ZS/")]
    return sum(values) / len(values) if values else None


def retention_fractions(metrics: dict, original: dict) -> dict:
    """Each retained metric as a fraction of the original model's; forgetting as 1 - FA/FA_original."""
    def frac(a, b):
        return a / b if b else 1.0  # nothing to retain, nothing lost

    # an original that never recognised the subgroup has nothing to forget: then any FA above 0 is a regression
    out = {"forgetting": 1 - frac(metrics["FA"], original["FA"]) if original.get("FA") else 1 - metrics["FA"]}
    for key in metrics:
        if key in ("RA", "OA") or key.startswith("ZS/"):
            out[key] = frac(metrics[key], original[key])
    zs, zs0 = zero_shot_mean(metrics), zero_shot_mean(original)
    if zs is not None:
        out["ZS"] = frac(zs, zs0)
    return out


def retention_check(fractions: dict, bars: dict[str, float]) -> dict:
    """Which retained metrics fell under their bar (a fraction of the original's): RA, OA and each zero-shot set
    (``ZS/<name>``, against the ``ZS`` bar) on their own, so a gain on one cannot hide a loss on another."""
    checked = {}
    for key, fraction in fractions.items():
        if key == "ZS":  # the sets' mean: under its bar only if one of them is
            continue
        bar = bars.get("ZS" if key.startswith("ZS/") else key)
        if bar is not None:
            checked[key] = {"fraction": fraction, "bar": bar}
    missed = {k: v for k, v in checked.items() if v["fraction"] < v["bar"] - 1e-12}
    return {"kept": not missed, "bars": dict(bars), "checked": checked, "missed": missed}


def composite_score(metrics: dict, original: dict) -> float:
    """Harmonic mean of forgetting and the RA / OA / mean-ZS retention fractions, each clipped to [0, 1]."""
    fr = retention_fractions(metrics, original)
    parts = [fr["forgetting"]] + [fr[k] for k in ("RA", "OA", "ZS") if k in fr]
    parts = [min(max(p, 0.0), 1.0) for p in parts]
    if any(p == 0 for p in parts):
        return 0.0
    return len(parts) / sum(1 / p for p in parts)
