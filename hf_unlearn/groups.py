"""The data groups of a run, from spec to tensors: forget / retain / other for training, calibration carved from the
training split, and the held-out evaluation sets (the eval split with the same groups, then each zero-shot dataset).

Every check runs on label columns before an image is decoded, so bad input fails early and names the problem.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import numpy as np
import torch

from .data import DataError, ImageSet, image_column, load_image_dataset, preprocess, proxy_pool
from .evaluation import EvalSet
from .spec import SpecError, Splits, SubgroupSpec, build_splits, ensure_class_label, group_masks

GROUPS = ("forget", "retain", "other")
EVAL_SPLIT_FALLBACKS = ("test", "validation")


@dataclass
class TrainingGroups:
    """Preprocessed training images per group (``train``: forget / retain / other, and the run's fixed pool of proxy
    blends) and the calibration set."""

    train: dict[str, ImageSet]
    calibration: EvalSet
    splits: Splits  # the row indices behind them
    class_names: list[str]
    # other-class rows that share the forget spec's conditions beyond its class (e.g. other classes' sketches); only
    # with --forget_image_weight, the one reader
    other_in_context: torch.Tensor | None = None


@dataclass
class EvalPlan:
    """The held-out data, checked but not yet decoded."""

    forget: SubgroupSpec
    test: datasets.Dataset
    masks: dict[str, torch.Tensor]
    zeroshot: list[tuple[str, datasets.Dataset]]


def load_checked(args, splits: tuple[str, ...] | None = None) -> datasets.DatasetDict:
    """The dataset with its computed attributes and a ClassLabel class column; the named ``splits`` (default: the
    train and eval splits) must exist."""
    dsd = load_image_dataset(args.dataset)
    if args.attribute_list:
        from .attributes import add_attributes

        dsd = add_attributes(dsd, args.attribute_list, image_column(next(iter(dsd.values())).features))
    dsd = ensure_class_label(dsd, args.class_column)
    for split in splits or (args.train_split, args.eval_split):
        if split not in dsd:
            raise DataError(f"dataset {args.dataset!r} has no {split!r} split; splits: {sorted(dsd)}")
    return dsd


def _stratified_cap(ds, class_column: str, cap: int | None, seed: int):
    if not cap or len(ds) <= cap:
        return ds
    return ds.train_test_split(test_size=cap, stratify_by_column=class_column, seed=seed)["test"]


def _zeroshot_split(name: str, dsd: datasets.DatasetDict, eval_split: str) -> str:
    tried = list(dict.fromkeys((eval_split, *EVAL_SPLIT_FALLBACKS)))
    for split in tried:
        if split in dsd:
            return split
    raise DataError(f"zero-shot dataset {name!r} has no held-out split (tried {', '.join(map(repr, tried))}); splits: {sorted(dsd)}")


def plan_eval(args, dsd: datasets.DatasetDict) -> EvalPlan:
    """Check the held-out data (the eval split's group masks, the zero-shot datasets) without decoding any image."""
    forget = SubgroupSpec.parse(args.forget)
    retain = SubgroupSpec.parse(args.retain) if args.retain else None
    test = dsd[args.eval_split]
    try:
        masks = group_masks(test, forget, retain, args.class_column)[:3]
    except SpecError as err:
        raise SpecError(f"on the {args.eval_split!r} split: {err}; forgetting could not be measured") from None
    zeroshot = []
    for name in args.zeroshot_list:
        if args.dataset and same_source(name, args.dataset):
            raise SpecError(f"--zeroshot_datasets {name!r} is the --dataset itself: its held-out split holds the forget subgroup, so its "
                            "zero-shot accuracy would count the forgetting as lost retention; zero-shot sets are other datasets "
                            "(the dataset's other classes are scored as OA)")
        zdsd = load_image_dataset(name)
        zds = ensure_class_label(zdsd[_zeroshot_split(name, zdsd, args.eval_split)], args.class_column)
        zeroshot.append((os.path.basename(os.path.normpath(name)), _stratified_cap(zds, args.class_column, args.max_eval_samples, args.seed)))
    masks = {g: torch.as_tensor(m) for g, m in zip(GROUPS, masks) if m.any()}
    return EvalPlan(forget, test, masks, zeroshot)


def _subgroup_masks(ds, spec: SubgroupSpec, class_column: str) -> dict[str, torch.Tensor]:
    """Per (class x spec column) row masks for the report's table, e.g. 'dog/sketch'."""
    cols = [class_column] + [c for c, _ in spec.conditions if c != class_column]
    values = {c: np.asarray(ds[c]) for c in cols}
    names = {c: getattr(ds.features[c], "names", None) for c in cols}
    keys: dict[tuple, list[int]] = {}
    for i in range(len(ds)):
        keys.setdefault(tuple(values[c][i] for c in cols), []).append(i)
    out = {}
    for key, rows in sorted(keys.items()):
        label = "/".join(str(names[c][v]) if names[c] else str(v) for c, v in zip(cols, key))
        out[label] = torch.zeros(len(ds), dtype=torch.bool)
        out[label][rows] = True
    return out


def prepare_eval_sets(args, processor, plan: EvalPlan) -> list[EvalSet]:
    """Held-out sets: the dataset's eval split with forget / retain / other masks, then each zero-shot dataset."""
    keep = [args.class_column]
    test_images = ImageSet.from_dataset(preprocess(plan.test, processor.image_processor, keep, args.eval_split), args.class_column)
    sets = [EvalSet(os.path.basename(os.path.normpath(args.dataset)), test_images, plan.test.features[args.class_column].names,
                    plan.masks, _subgroup_masks(plan.test, plan.forget, args.class_column))]
    for name, zds in plan.zeroshot:
        images = ImageSet.from_dataset(preprocess(zds, processor.image_processor, keep, name), args.class_column)
        sets.append(EvalSet(name, images, zds.features[args.class_column].names))
    return sets


def _calibration_set(parts: dict[str, ImageSet], class_names: list[str]) -> EvalSet:
    """The calibration groups as one set with forget / retain / other masks."""
    sets = [parts[f"calibration_{g}"] for g in GROUPS]
    images = ImageSet.concat(*sets)
    masks, start = {}, 0
    for group, s in zip(GROUPS, sets):
        if len(s):
            masks[group] = torch.zeros(len(images), dtype=torch.bool)
            masks[group][start : start + len(s)] = True
        start += len(s)
    return EvalSet("calibration", images, class_names, masks)


def same_source(a: str, b: str) -> bool:
    """The same local folder (however written) or the same Hub id."""
    return os.path.realpath(a) == os.path.realpath(b) if os.path.exists(a) and os.path.exists(b) else a == b


def proxy_dataset_split(args) -> datasets.Dataset | None:
    """``--proxy_dataset``'s split whose images join the proxy pool, checked before any image is decoded. A zero-shot
    set is refused: distilling on its images would make its held-out figure an in-distribution one."""
    if not args.proxy_dataset:
        return None
    clash = [z for z in args.zeroshot_list if same_source(z, args.proxy_dataset)]
    if clash:
        raise SpecError(f"--proxy_dataset {args.proxy_dataset!r} is also in --zeroshot_datasets: its zero-shot accuracy "
                        "would no longer be held out; choose a dataset that is not evaluated")
    dsd = load_image_dataset(args.proxy_dataset)
    split = "train" if "train" in dsd else next(iter(dsd)) if len(dsd) == 1 else None
    if split is None:
        raise DataError(f"--proxy_dataset {args.proxy_dataset!r} has no 'train' split; splits: {sorted(dsd)}")
    image_column(dsd[split].features)
    return dsd[split]


def proxy_dataset_images(ds: datasets.Dataset, args, processor) -> ImageSet:
    """``--proxy_dataset_images`` seeded random rows of ``ds``, preprocessed, labels -1 (never read)."""
    rows = np.sort(np.random.default_rng([args.seed, 11]).permutation(len(ds))[: args.proxy_dataset_images])
    return ImageSet.from_dataset(preprocess(ds.select(rows), processor.image_processor, [], f"{args.proxy_dataset} (proxies)", rows=rows), None)


def prepare_groups(args, processor) -> tuple[TrainingGroups, EvalPlan]:
    """Validate the specs, carve the groups and check the held-out data, then preprocess only the rows needed."""
    forget = SubgroupSpec.parse(args.forget)
    retain = SubgroupSpec.parse(args.retain) if args.retain else None
    dsd = load_checked(args)
    train = dsd[args.train_split]
    class_names = train.features[args.class_column].names
    splits = build_splits(train, forget, retain, args.class_column, args.calibration_fraction, args.max_calibration, args.max_other,
                          args.seed, max_forget=args.max_forget, max_retain=args.max_retain,
                          max_forget_calibration=args.max_forget_calibration)
    if len(splits.forget) == 0 or len(splits.calib_forget) == 0:
        n = len(splits.forget) + len(splits.calib_forget)
        raise SpecError(f"forget spec {args.forget!r} matches {n} row(s) of {args.train_split!r}; at least 2 are needed "
                        "(one to train on, one to calibrate the restore step)")
    plan = plan_eval(args, dsd)
    outside = proxy_dataset_split(args)
    # images are decoded and preprocessed only now, after every check above has passed
    names = [*GROUPS, *(f"calibration_{g}" for g in GROUPS)]
    rows = [getattr(splits, g) for g in GROUPS] + [getattr(splits, f"calib_{g}") for g in GROUPS]
    order = np.concatenate(rows)
    images = ImageSet.from_dataset(preprocess(train.select(order), processor.image_processor, [args.class_column], args.train_split, rows=order),
                                   args.class_column)
    parts, start = {}, 0
    for name, r in zip(names, rows):
        parts[name] = images.subset(range(start, start + len(r)))
        start += len(r)
    train = {g: parts[g] for g in GROUPS}
    pool = proxy_pool(train["retain"], train["other"], seed=args.seed)
    if outside is not None:
        outside = proxy_dataset_images(outside, args, processor)
        pool = outside if pool is None else ImageSet.concat(pool, outside)
    if pool is not None:
        train["proxy"] = pool
    groups = TrainingGroups(train, _calibration_set(parts, class_names), splits, class_names)
    if args.forget_image_weight:
        context = forget.without(args.class_column)
        groups.other_in_context = (torch.as_tensor(context.mask(dsd[args.train_split])[splits.other]) if context
                                   else torch.ones(len(splits.other), dtype=torch.bool))
    return groups, plan
