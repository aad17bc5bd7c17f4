"""Computed attribute columns: subgroups the dataset does not label, such as red cars.

An attribute is a function ``PIL.Image -> name`` plus the list of names it can return; ``add_attributes`` adds
it as a ``ClassLabel`` column with ``datasets.map`` (cached like any map), so ``--forget label=automobile,color=red``
works exactly like a labelled column. To add one, write the function and register it in ``ATTRIBUTES``.
"""
from __future__ import annotations

import datasets
import numpy as np
from PIL import Image

COLORS = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "gray", "black"]
# hue (degrees) upper edges of the chromatic names; red wraps around 360
_HUES = [(15, "red"), (40, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"), (260, "blue"), (290, "purple"), (345, "pink"), (360, "red")]


def dominant_color(image: Image.Image, center: float = 0.6, min_chromatic: float = 0.25) -> str:
    """The most common hue of the saturated pixels in the central ``center`` crop (where the object usually is);
    an achromatic name (white / gray / black) when fewer than ``min_chromatic`` of them are saturated."""
    img = image.convert("RGB")
    w, h = img.size
    dx, dy = int(w * (1 - center) / 2), int(h * (1 - center) / 2)
    hsv = np.asarray(img.crop((dx, dy, w - dx, h - dy)).convert("HSV"), dtype=np.float32) / 255.0
    hue, sat, val = hsv[..., 0] * 360, hsv[..., 1], hsv[..., 2]
    chromatic = (sat > 0.35) & (val > 0.25)
    if chromatic.mean() < min_chromatic:
        v = float(val.mean())
        return "white" if v > 0.7 else "black" if v < 0.25 else "gray"
    counts: dict[str, int] = {}
    for edge_lo, (edge_hi, name) in zip([0] + [e for e, _ in _HUES[:-1]], _HUES):
        counts[name] = counts.get(name, 0) + int(((hue >= edge_lo) & (hue < edge_hi) & chromatic).sum())
    return max(counts, key=counts.get)


ATTRIBUTES = {"color": (dominant_color, COLORS)}


def add_attributes(dsd: datasets.DatasetDict, names: list[str], image_column: str = "image") -> datasets.DatasetDict:
    """Add each named attribute as a ClassLabel column to every split (batched ``map``; decoded once)."""
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; available: {sorted(ATTRIBUTES)}")
    out = {}
    for split, ds in dsd.items():
        for name in names:
            if name in ds.column_names:
                raise ValueError(f"split {split!r} already has a column {name!r}")
            fn, values = ATTRIBUTES[name]
            features = ds.features.copy()
            features[name] = datasets.ClassLabel(names=values)
            ds = ds.map(lambda batch, fn=fn, values=values: {name: [values.index(fn(im)) for im in batch[image_column]]},
                        batched=True, batch_size=500, features=features, desc=f"attribute {name} ({split})")
        out[split] = ds
    return datasets.DatasetDict(out)
