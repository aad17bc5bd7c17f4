"""The offline default "world": a generated PACS-like image-caption dataset and a tiny CLIP pretrained on it.

Nothing here touches the network or any file outside the cache folder, so the default command works on a fresh
machine. Images are 32x32 shapes (``label``) drawn in one of four visibly different styles (``domain``: painting /
cartoon / photo / sketch) and colours (``color``). The CLIP is pretrained contrastively by our own loop on captions
built from those columns and saved as a standard Hugging Face folder (model, image processor, word-level tokenizer)
that ``CLIPModel`` / ``CLIPProcessor`` / ``pipeline("zero-shot-image-classification")`` load offline.

``python -m hf_unlearn.demo [cache_dir]`` builds (or reuses) the world and prints its zero-shot accuracy table.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from .pretrain import _pixel_values, build_tokenizer, demo_clip_config, pretrain_demo_clip  # noqa: F401  (the package's API)
from .world import COLOR_NAMES, COLORS, DOMAINS, IMAGE_SIZE, SHAPES, demo_features, make_demo_dataset, render_image  # noqa: F401

logger = logging.getLogger("hf_unlearn")

DEMO_FORGET = "label=circle,domain=sketch"  # the default subgroup the product makes the demo model forget
_MARKER = "COMPLETE.json"
_FORMAT = 2  # bump whenever generation or pretraining defaults change, so stale caches are rebuilt


def default_cache_dir() -> str:
    """``$HF_UNLEARN_CACHE/demo-v1``, else ``~/.cache/hf_unlearn/demo-v1``."""
    from ..run import cache_root

    return os.path.join(cache_root(), "demo-v1")


def _read_marker(path: str) -> dict | None:
    try:
        with open(os.path.join(path, _MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure_demo(
    cache_dir: str | None = None, *, data_kwargs: dict | None = None, pretrain_kwargs: dict | None = None
) -> tuple[str, str]:
    """Build, or reuse if already complete, the demo world; returns ``(model_dir, dataset_dir)``.

    ``dataset_dir`` holds ``train.parquet`` / ``test.parquet`` (ClassLabel features kept in the Parquet metadata);
    ``model_dir`` is a ``CLIPModel`` + ``CLIPProcessor`` folder. Everything is built in a temporary sibling folder
    that is renamed into place last, so an interrupted build never leaves a half-built cache. ``data_kwargs`` /
    ``pretrain_kwargs`` override the defaults (tests use tiny ones); a cache built with other settings is rebuilt.
    """
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    model_dir, data_dir = os.path.join(cache_dir, "model"), os.path.join(cache_dir, "data")
    settings = {"format": _FORMAT, "data": data_kwargs or {}, "pretrain": pretrain_kwargs or {}}
    if _read_marker(cache_dir) == settings:
        logger.info("demo world: reusing %s", cache_dir)
        return model_dir, data_dir
    if os.path.isdir(cache_dir) and os.listdir(cache_dir) and _read_marker(cache_dir) is None:
        raise FileExistsError(f"{cache_dir} exists and is not a demo cache; refusing to overwrite it")

    parent = os.path.dirname(cache_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".demo-build-", dir=parent)
    try:
        start = time.time()
        logger.info("demo world: generating images (one-off, about a minute on 2 CPU cores) in %s", cache_dir)
        dataset_dict = make_demo_dataset(**settings["data"])
        os.makedirs(os.path.join(tmp, "data"))
        for split, ds in dataset_dict.items():
            ds.to_parquet(os.path.join(tmp, "data", f"{split}.parquet"))
        sizes = {k: len(v) for k, v in dataset_dict.items()}
        logger.info("demo world: %s images in %.0fs; pretraining the demo CLIP", sizes, time.time() - start)
        pretrain_demo_clip(dataset_dict, os.path.join(tmp, "model"), **settings["pretrain"])
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump(settings, f)
        if _read_marker(cache_dir) == settings:  # a concurrent build finished first: keep (and use) that one
            return model_dir, data_dir
        if os.path.isdir(cache_dir):  # an older or differently configured build: move it aside, then drop it
            old = tempfile.mkdtemp(prefix=".demo-old-", dir=parent)
            os.replace(cache_dir, os.path.join(old, "world"))
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, cache_dir)  # atomic: the cache is either absent or complete
        except OSError:
            if _read_marker(cache_dir) != settings:
                raise
        logger.info("demo world: ready in %s (%.0fs)", cache_dir, time.time() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model_dir, data_dir


def ensure_demo_reference(cache_dir: str | None = None, forget: str = DEMO_FORGET) -> str:
    """The demo CLIP pretrained by the same code and settings on the world without ``forget``'s rows (default: the
    default subgroup): a model that never saw it, for the audit to compare with. Built once per subgroup beside the
    world (a run in the demo world builds the one for its subgroup)."""
    from ..data import load_image_dataset
    from ..spec import SubgroupSpec

    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    world = _read_marker(cache_dir)
    if world is None:
        raise FileNotFoundError(f"no demo world in {cache_dir}; ensure_demo() builds it")
    spec = SubgroupSpec(tuple(sorted(SubgroupSpec.parse(forget).conditions)))  # one folder per subgroup, however it is written
    if set(spec.conditions) == set(SubgroupSpec.parse(DEMO_FORGET).conditions):
        name, forget = "reference", DEMO_FORGET
    else:
        forget = str(spec)
        name = "reference-" + forget.replace("=", "-").replace(",", "_")
    ref, settings = os.path.join(cache_dir, name), {**world, "without": forget}
    if _read_marker(ref) == settings:
        return ref
    logger.info("demo world: pretraining the reference CLIP without %s (one-off)", forget)
    dataset_dict = load_image_dataset(os.path.join(cache_dir, "data"))
    train = dataset_dict["train"]
    dataset_dict["train"] = train.select(np.flatnonzero(~spec.mask(train)))
    tmp = tempfile.mkdtemp(prefix=".reference-build-", dir=cache_dir)
    try:
        pretrain_demo_clip(dataset_dict, os.path.join(tmp, "model"), **world["pretrain"])
        with open(os.path.join(tmp, "model", _MARKER), "w") as f:
            json.dump(settings, f)
        shutil.rmtree(ref, ignore_errors=True)
        os.replace(os.path.join(tmp, "model"), ref)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ref
