"""Loading image datasets (local Parquet folders, ``save_to_disk`` folders or Hub ids) and CLIP preprocessing.

Images are decoded and preprocessed once with ``datasets.map``; training and evaluation then work on
in-memory tensors, which matters on CPU where the PIL image processor is the slow part.
"""
from __future__ import annotations

import glob
import io
import os
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from .errors import UsageError


class DataError(UsageError, ValueError):
    """A dataset that cannot be used as given (missing split or column, corrupt image)."""


def load_image_dataset(name_or_path: str) -> datasets.DatasetDict:
    """A local folder of ``<split>*.parquet`` files, a ``save_to_disk`` folder, or a Hub dataset id."""
    from .checks import looks_local

    if looks_local(name_or_path) and not os.path.isdir(name_or_path):
        raise DataError(f"dataset path {name_or_path!r} does not exist or is not a folder")
    if os.path.isdir(name_or_path):
        # `datasets` fingerprints parquet files by their path as written, so "../data" from two folders would be two
        # datasets to every cache keyed on it (the preprocessed pixels, the original's predictions): name them absolutely
        name_or_path = os.path.realpath(name_or_path)
        if os.path.exists(os.path.join(name_or_path, "dataset_dict.json")):
            return datasets.load_from_disk(name_or_path)
        files: dict[str, list[str]] = {}
        for path in sorted(glob.glob(os.path.join(name_or_path, "**", "*.parquet"), recursive=True)):
            split = os.path.basename(path).split(".")[0].split("-")[0]
            files.setdefault(split, []).append(path)
        if not files:
            raise DataError(f"no *.parquet files or dataset_dict.json in {name_or_path!r}")
        loader = lambda: datasets.load_dataset("parquet", data_files=files)  # noqa: E731
    else:
        loader = lambda: datasets.load_dataset(name_or_path)  # noqa: E731
    try:
        return loader()
    except Exception as err:  # pyarrow, fsspec and the Hub raise many types for an unreadable or unknown dataset
        raise DataError(f"cannot read dataset {name_or_path!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err


def image_column(features: datasets.Features) -> str:
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in ("image", "img"):
        if name in features:
            return name
    raise DataError(f"no image column found; columns: {sorted(features)}")


def _decode(value, row: int, split_name: str) -> Image.Image:
    """Decode one undecoded ``datasets.Image`` cell, naming the dataset's row (and file) if it is corrupt."""
    try:
        if isinstance(value, Image.Image):
            image = value
        elif value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        else:
            image = Image.open(value["path"])
        image.load()
        return image.convert("RGB")
    except Exception as err:  # PIL raises many types for broken files
        where = f" ({value['path']})" if isinstance(value, dict) and value.get("path") else ""
        raise DataError(f"corrupt image at row {row} of {split_name!r}{where}: {err}") from err


def preprocess(dataset: datasets.Dataset, image_processor, keep_columns: list[str], split_name: str = "data", rows=None) -> datasets.Dataset:
    """Add ``pixel_values`` (float32, CHW) with the model's own image processor; drop the raw images. ``rows``: the
    row of the original split behind each row of ``dataset`` (a selection), so errors name the dataset's own rows."""
    column = image_column(dataset.features)
    missing = [c for c in keep_columns if c not in dataset.column_names]
    if missing:
        raise DataError(f"columns {missing} not in {split_name!r}; columns: {dataset.column_names}")
    raw = dataset.select_columns([column] + keep_columns).cast_column(column, datasets.Image(decode=False))

    def transform(batch, indices):
        images = [_decode(v, int(rows[i]) if rows is not None else i, split_name) for v, i in zip(batch[column], indices)]
        return {"pixel_values": image_processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32)}

    return raw.map(
        transform,
        batched=True,
        batch_size=256,
        with_indices=True,
        remove_columns=[column],
        desc=f"preprocess {split_name}",
    )


@dataclass
class ImageSet:
    """Preprocessed images with their class labels (and optional group ids), held as tensors."""

    pixel_values: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageSet(self.pixel_values[index], self.labels[index])

    @staticmethod
    def concat(*sets: "ImageSet") -> "ImageSet":
        """The sets' rows one after the other."""
        return ImageSet(torch.cat([s.pixel_values for s in sets]), torch.cat([s.labels for s in sets]))

    @classmethod
    def from_dataset(cls, dataset: datasets.Dataset, class_column: str | None) -> "ImageSet":
        """``pixel_values`` and the class column as tensors; without a class column (unlabelled images) every label is -1."""
        table = dataset.with_format("arrow", columns=["pixel_values"] + ([class_column] if class_column else []))[:]
        pixels = torch.from_numpy(nested_lists_to_array(table.column("pixel_values"))).float()
        labels = (torch.from_numpy(table.column(class_column).to_numpy().astype(np.int64)) if class_column
                  else torch.full((len(pixels),), -1, dtype=torch.long))
        return cls(pixels, labels)


def nested_lists_to_array(column: pa.ChunkedArray) -> np.ndarray:
    """An Arrow column of equal-shape nested lists (``pixel_values``) as one numpy array, flattened in Arrow.

    ``datasets``' own torch/numpy formatting converts such a column row by row through Python lists: 30+ s for
    10,000 64-px images here, against well under a second flattening the Arrow buffers once.
    """
    array, shape = column.combine_chunks(), []
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        lengths = array.value_lengths().to_numpy(zero_copy_only=False) if len(array) else np.zeros(0)
        if len(lengths) and (lengths != lengths[0]).any():
            raise DataError(f"pixel_values rows differ in shape ({sorted(set(lengths.tolist()))[:4]} items on one axis)")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        array = array.flatten()
    out = array.to_numpy(zero_copy_only=False).reshape(len(column), *shape)
    return out if out.flags.writeable else out.copy()  # Arrow buffers are read-only; tensors over them must not be


class IndexDataset(torch.utils.data.Dataset):
    """One item per row of the stage's primary stream (forget rows for forget, retain rows for remind)."""

    def __init__(self, n: int):
        if n <= 0:
            raise DataError("the primary training stream is empty")
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


# The order the non-primary streams are drawn in (each draw advances the same per-image generator): fixed, so the
# images a step sees do not depend on which streams a stage has, and runs of earlier versions reproduce.
DRAW_ORDER = ("other", "retain", "forget", "proxy")
# Proxy images per run: every step draws from this fixed pool, so the teacher embeds each proxy once per run.
PROXY_POOL = 1024


def _draw_rank(name: str) -> tuple:
    return (DRAW_ORDER.index(name) if name in DRAW_ORDER else len(DRAW_ORDER), name)


def proxy_pool(retain: ImageSet | None, other: ImageSet | None, size: int = PROXY_POOL, seed: int = 0) -> ImageSet | None:
    """``size`` mixup blends of a retain and an other-class image (or of two images of the one pool there is):
    cheap stand-ins for the unseen pretraining distribution on which the student must keep agreeing with the teacher.
    Fixed per run (a function of the seed), so the teacher's embeddings of them are computed once. Labels are -1."""
    pools = [p for p in (retain, other) if p is not None and len(p)]
    if not pools:
        return None
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 7]).generate_state(1, np.uint64)[0]))
    a, b = pools[0], pools[-1]
    ia, ib = torch.randint(len(a), (size,), generator=g), torch.randint(len(b), (size,), generator=g)
    lam = torch.rand(size, 1, 1, 1, generator=g)
    return ImageSet(lam * a.pixel_values[ia] + (1 - lam) * b.pixel_values[ib], torch.full((size,), -1, dtype=torch.long))


class UnlearningCollator:
    """Turns a batch of primary-stream indices into ``{"forget", "retain", "other", "proxy"}`` image batches.

    The primary stream is walked by the Trainer's sampler. Every other draw is a function of (seed, epoch,
    primary index) alone, never of the batch it lands in or of a global RNG: so a run resumed mid-epoch, or the
    same global batch split over several processes, sees exactly the same images. Each stream's batch carries the
    ``index`` of its rows in that stream, which is what a precomputed teacher looks its outputs up by. ``proxy``
    images come from a fixed pool of mixup blends (``proxy_pool``; built here unless ``streams`` has one).
    ``alternate_other_proxy``: each primary image brings an other-class image or a proxy (a coin of its own draws),
    not both, so a step embeds three images per primary image instead of four.
    """

    def __init__(self, primary: str, streams: dict[str, ImageSet], proxy: bool = False, seed: int = 0, augment: bool = False,
                 alternate_other_proxy: bool = False):
        if primary not in streams:
            raise DataError(f"primary stream {primary!r} not in {sorted(streams)}")
        streams = {k: v for k, v in streams.items() if v is not None and len(v) and (proxy or k != "proxy")}
        if proxy and "proxy" not in streams:
            pool = proxy_pool(streams.get("retain"), streams.get("other"), seed=seed)
            if pool is not None:
                streams["proxy"] = pool
        self.primary, self.streams = primary, streams
        self.proxy, self.seed, self.epoch, self.augment = proxy, seed, 0, augment
        self.alternate = alternate_other_proxy and "other" in streams and "proxy" in streams and primary not in ("other", "proxy")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def __call__(self, indices: list[int]) -> dict:
        draws = {self.primary: torch.as_tensor(indices, dtype=torch.long)}
        gens = [self._generator(i) for i in indices]
        for k in sorted((k for k in self.streams if k != self.primary), key=_draw_rank):
            draws[k] = torch.cat([torch.randint(len(self.streams[k]), (1,), generator=g) for g in gens])
        rows = {k: torch.arange(len(indices)) for k in draws}  # which primary images each stream's rows belong to
        if self.alternate:  # the coin comes after every other draw, so those stay what they are without it
            other = torch.cat([torch.rand(1, generator=g) for g in gens]) < 0.5
            rows["other"], rows["proxy"] = other.nonzero().view(-1), (~other).nonzero().view(-1)
        batch = {}
        for k, i in draws.items():
            i = i[rows[k]]
            if len(i):
                batch[k] = {"pixel_values": self.streams[k].pixel_values[i], "labels": self.streams[k].labels[i], "index": i}
        if self.augment:
            for k in sorted(batch):
                batch[k]["pixel_values"] = torch.stack([random_view(x, gens[r]) for x, r in zip(batch[k]["pixel_values"], rows[k].tolist())])
        return batch


def random_view(image: torch.Tensor, generator: torch.Generator, min_scale: float = 0.6) -> torch.Tensor:
    """A random resized crop (area ``min_scale``..1, square-ish) and horizontal flip of a CHW tensor, same size out.

    Forgetting learnt on a few hundred fixed images otherwise stops at those images; random views make the
    student forget (and the teacher be matched on) the subgroup's look rather than its exact pixels.
    """
    _, h, w = image.shape
    r = torch.rand(4, generator=generator)
    scale = min_scale + (1 - min_scale) * float(r[0])
    ch, cw = max(1, round(h * scale ** 0.5)), max(1, round(w * scale ** 0.5))
    top, left = int(float(r[1]) * (h - ch + 1)), int(float(r[2]) * (w - cw + 1))
    crop = image[:, top : top + ch, left : left + cw]
    if (ch, cw) != (h, w):
        crop = torch.nn.functional.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return crop.flip(-1) if float(r[3]) < 0.5 else crop
