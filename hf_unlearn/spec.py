"""Subgroup specs (``"label=dog,domain=sketch"``) and the forget / retain / other / calibration splits.

Every selection is a ``datasets`` filter over the label columns only, so images are never decoded here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:  # parsing a spec needs no datasets import (the command line parses every spec before anything loads)
    import datasets


class SpecError(UsageError, ValueError):
    """A forget/retain spec or split that cannot be used; raised before any training."""


@dataclass(frozen=True)
class SubgroupSpec:
    """AND-ed ``column=value`` conditions; values are class names or integer indices."""

    conditions: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> "SubgroupSpec":
        if text is None or not str(text).strip():
            raise SpecError("empty subgroup spec; expected 'column=value[,column=value...]', e.g. 'label=dog,domain=sketch'")
        conditions = []
        for part in str(text).split(","):
            if "=" not in part:
                raise SpecError(f"bad condition {part.strip()!r} in spec {text!r}; expected 'column=value'")
            column, value = (s.strip() for s in part.split("=", 1))
            if not column or not value or "=" in value:
                raise SpecError(f"malformed condition {part.strip()!r} in spec {text!r}; expected 'column=value'")
            conditions.append((column, value))
        columns = [c for c, _ in conditions]
        if len(set(columns)) != len(columns):
            raise SpecError(f"spec {text!r} names a column twice; conditions are AND-ed, one value per column")
        return cls(tuple(conditions))

    def __str__(self) -> str:
        return ",".join(f"{c}={v}" for c, v in self.conditions)

    def without(self, column: str) -> "SubgroupSpec | None":
        """The conditions on every column but ``column`` (e.g. the forget spec's context beyond its class), or None."""
        rest = tuple((c, v) for c, v in self.conditions if c != column)
        return SubgroupSpec(rest) if rest else None

    def resolve(self, features: datasets.Features) -> dict[str, object]:
        """Map each condition to the stored value (ClassLabel names -> ints), naming valid choices on error."""
        resolved = {}
        for column, value in self.conditions:
            if column not in features:
                raise SpecError(f"unknown column {column!r} in spec {str(self)!r}; columns: {sorted(features)}")
            resolved[column] = _resolve_value(column, value, features[column])
        return resolved

    def mask(self, dataset: datasets.Dataset) -> np.ndarray:
        """Boolean row mask, computed with a batched ``datasets`` filter over the named columns only."""
        resolved = self.resolve(dataset.features)
        columns = list(resolved)
        rows = dataset.select_columns(columns).add_column("_row", np.arange(len(dataset)))
        kept = rows.filter(
            lambda *cols: np.logical_and.reduce([np.asarray(col) == resolved[c] for c, col in zip(columns, cols[:-1])]),
            input_columns=columns + ["_row"],
            batched=True,
            batch_size=10_000,
            desc=f"select {self}",
        )
        mask = np.zeros(len(dataset), dtype=bool)
        mask[np.asarray(kept["_row"], dtype=np.int64)] = True
        return mask


def _resolve_value(column: str, value: str, feature) -> object:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        if value in feature.names:
            return feature.str2int(value)
        if value.lstrip("-").isdigit() and 0 <= int(value) < feature.num_classes:
            return int(value)
        raise SpecError(f"unknown value {value!r} for column {column!r}; choices: {feature.names} (or their indices 0-{feature.num_classes - 1})")
    if isinstance(feature, datasets.Value):
        if feature.dtype.startswith(("int", "uint")):
            try:
                return int(value)
            except ValueError:
                raise SpecError(f"column {column!r} holds integers; got {value!r}") from None
        if feature.dtype.startswith("float"):
            return float(value)
        if feature.dtype == "bool":
            return value.lower() in ("1", "true", "yes")
        return value
    raise SpecError(f"column {column!r} has type {type(feature).__name__}; only ClassLabel and scalar Value columns can be selected")


def ensure_class_label(dataset: datasets.DatasetDict | datasets.Dataset, class_column: str):
    """Class names drive the zero-shot prompts, so the class column must be a ClassLabel (strings are encoded)."""
    import datasets

    features = next(iter(dataset.values())).features if isinstance(dataset, datasets.DatasetDict) else dataset.features
    if class_column not in features:
        raise SpecError(f"unknown class column {class_column!r}; columns: {sorted(features)}")
    feature = features[class_column]
    if isinstance(feature, datasets.ClassLabel):
        return dataset
    if isinstance(feature, datasets.Value) and feature.dtype == "string":
        return dataset.class_encode_column(class_column)
    raise SpecError(f"class column {class_column!r} must be a ClassLabel or string column, got {feature}")


@dataclass
class Splits:
    """Row indices into the training split; calibration rows are carved out and never trained on."""

    forget: np.ndarray
    retain: np.ndarray
    other: np.ndarray
    calib_forget: np.ndarray
    calib_retain: np.ndarray
    calib_other: np.ndarray
    forget_classes: list[int]

    def sizes(self) -> dict[str, int]:
        return {k: int(len(getattr(self, k))) for k in ("forget", "retain", "other", "calib_forget", "calib_retain", "calib_other")}


def group_masks(dataset: datasets.Dataset, forget: SubgroupSpec, retain: SubgroupSpec | None, class_column: str):
    """Forget / retain / other masks on one split; retain defaults to the forget rows' classes minus the forget rows."""
    forget_mask = forget.mask(dataset)
    if not forget_mask.any():
        raise SpecError(f"forget spec {str(forget)!r} matches no rows of the {len(dataset)}-row split")
    labels = np.asarray(dataset[class_column])
    forget_classes = sorted(int(c) for c in np.unique(labels[forget_mask]))
    if retain is None:
        retain_mask = np.isin(labels, forget_classes) & ~forget_mask
    else:
        retain_mask = retain.mask(dataset)
        overlap = int((retain_mask & forget_mask).sum())
        if overlap:
            raise SpecError(f"forget spec {str(forget)!r} and retain spec {str(retain)!r} overlap on {overlap} rows; they must be disjoint")
    if not retain_mask.any():
        names = dataset.features[class_column].names
        raise SpecError(
            f"retain set is empty (forget classes {[names[c] for c in forget_classes]}); "
            "the forget spec covers the whole class: pass --retain to name the rows to keep"
        )
    other_mask = ~(forget_mask | retain_mask)
    return forget_mask, retain_mask, other_mask, forget_classes


def build_splits(
    dataset: datasets.Dataset,
    forget: SubgroupSpec,
    retain: SubgroupSpec | None,
    class_column: str,
    calibration_fraction: float = 0.15,
    max_calibration: int = 200,
    max_other: int = 2000,
    seed: int = 0,
    max_forget: int | None = None,
    max_retain: int | None = None,
    max_forget_calibration: int | None = None,
) -> Splits:
    """Training and calibration row indices; ``max_other`` caps the anchor pool of other-class images and
    ``max_forget`` / ``max_retain`` the forget and retain training images (random subsets; calibration first);
    ``max_forget_calibration`` (default ``max_calibration``) the forget group's calibration images."""
    forget_mask, retain_mask, other_mask, forget_classes = group_masks(dataset, forget, retain, class_column)
    rng = np.random.default_rng(seed)

    def carve(mask, cap_train=None, cap_cal=max_calibration):
        rows = rng.permutation(np.flatnonzero(mask))
        n_cal = min(cap_cal, max(1, int(round(len(rows) * calibration_fraction)))) if len(rows) > 1 else 0
        cal, train = rows[:n_cal], rows[n_cal:]
        if cap_train is not None:
            train = train[:cap_train]
        return np.sort(train), np.sort(cal)

    f, cf = carve(forget_mask, cap_train=max_forget, cap_cal=max_forget_calibration or max_calibration)
    r, cr = carve(retain_mask, cap_train=max_retain)
    o, co = carve(other_mask, cap_train=max_other)
    return Splits(f, r, o, cf, cr, co, forget_classes)
