"""Everything checked and prepared before training: the model, the splits, the held-out sets.

Every check here runs before an image is decoded or a weight trained, so bad input fails early and names the
problem; the held-out sets and the original model's metrics on them are memoised per process for benchmarks.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from transformers import AutoConfig, AutoProcessor

from . import family, precision
from .config import UnlearnArguments
from .data import DataError, ImageSet, load_image_dataset, preprocess
from .evaluation import EvalSet, evaluate_sets
from .spec import SpecError, SubgroupSpec, build_splits, ensure_class_label, group_masks

SUPPORTED_MODEL_TYPES = tuple(family.MODEL_CLASSES)


class ModelError(ValueError):
    """A checkpoint that is not a CLIP-family dual encoder, or has no safetensors weights."""


class OutputExistsError(FileExistsError):
    pass


# ---- checks that run before anything is trained ---------------------------------------------------------

def check_output_dir(output_dir: str, overwrite: bool) -> None:
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)) and not overwrite:
        raise OutputExistsError(f"output folder {output_dir!r} already holds a result; pass --overwrite_output_dir or choose another --output_dir")


def load_clip(name_or_path: str, attn_implementation: str | None = None):
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a model config from {name_or_path!r}: {err}") from err
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{name_or_path!r} is a {config.model_type!r} model, not a CLIP dual encoder; supported model types: {SUPPORTED_MODEL_TYPES}")
    cls = family.model_class(config.model_type)
    try:
        model = cls.from_pretrained(name_or_path, use_safetensors=True, trust_remote_code=False, attn_implementation=attn_implementation)
    except OSError as err:
        raise ModelError(f"cannot load safetensors weights from {name_or_path!r} (pickled weights are never loaded): {err}") from err
    processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=False)
    return model, processor


def weights_folder(name_or_path: str) -> str:
    """The folder holding the original's safetensors files (the Hub cache for Hub ids: already downloaded)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    from huggingface_hub import snapshot_download

    return snapshot_download(name_or_path, allow_patterns=["*.safetensors", "*.json", "*.txt"])


def default_output_dir(args: UnlearnArguments) -> str:
    name = os.path.basename(os.path.normpath(args.dataset or "demo"))
    tag = "-".join(v for _, v in SubgroupSpec.parse(args.forget).conditions) if args.forget else "default"
    return os.path.join("runs", f"{name}-{tag}".replace("/", "_"))


# ---- data ----------------------------------------------------------------------------------------------

def _subgroup_masks(ds, spec: SubgroupSpec, class_column: str) -> dict[str, torch.Tensor]:
    """Per (class x spec column) accuracies for the report's table, e.g. 'dog/sketch'."""
    extra = [c for c, _ in spec.conditions if c != class_column]
    cols = [class_column] + extra
    values = {c: np.asarray(ds[c]) for c in cols}
    names = {c: (ds.features[c].names if hasattr(ds.features[c], "names") else None) for c in cols}
    keys = {}
    for i in range(len(ds)):
        keys.setdefault(tuple(values[c][i] for c in cols), []).append(i)
    out = {}
    for key, rows in sorted(keys.items()):
        label = "/".join(str(names[c][v]) if names[c] else str(v) for c, v in zip(cols, key))
        m = torch.zeros(len(ds), dtype=torch.bool)
        m[rows] = True
        out[label] = m
    return out


def _stratified_cap(ds, class_column: str, cap: int | None, seed: int):
    if not cap or len(ds) <= cap:
        return ds
    split = ds.train_test_split(test_size=cap, stratify_by_column=class_column, seed=seed)
    return split["test"]


def _load_checked(args: UnlearnArguments):
    dsd = load_image_dataset(args.dataset)
    if args.attribute_list:
        from .attributes import add_attributes
        from .data import image_column

        dsd = add_attributes(dsd, args.attribute_list, image_column(next(iter(dsd.values())).features))
    dsd = ensure_class_label(dsd, args.class_column)
    for split in (args.train_split, args.eval_split):
        if split not in dsd:
            raise DataError(f"dataset {args.dataset!r} has no {split!r} split; splits: {sorted(dsd)}")
    return dsd


def _eval_plan(args: UnlearnArguments, dsd) -> dict:
    """Check the held-out data (eval split masks, zero-shot datasets) without decoding any image."""
    forget = SubgroupSpec.parse(args.forget)
    retain = SubgroupSpec.parse(args.retain) if args.retain else None
    test = dsd[args.eval_split]
    try:
        tf, tr, to, _ = group_masks(test, forget, retain, args.class_column)
    except SpecError as err:
        raise SpecError(f"on the {args.eval_split!r} split: {err}; forgetting could not be measured") from None
    zs = []
    for name in args.zeroshot_list:
        zdsd = load_image_dataset(name)
        zsplit = args.eval_split if args.eval_split in zdsd else sorted(zdsd)[-1]
        zds = ensure_class_label(zdsd[zsplit], args.class_column)
        zs.append((os.path.basename(os.path.normpath(name)), _stratified_cap(zds, args.class_column, args.max_eval_samples, args.seed)))
    masks = {r: torch.as_tensor(m) for r, m in zip(("forget", "retain", "other"), (tf, tr, to)) if m.any()}
    return dict(forget=forget, test=test, masks=masks, zeroshot=zs)


def prepare_eval_sets(args: UnlearnArguments, processor, dsd=None, plan: dict | None = None) -> list[EvalSet]:
    """Held-out sets: the dataset's eval split with forget / retain / other masks, then each zero-shot dataset."""
    plan = plan or _eval_plan(args, dsd if dsd is not None else _load_checked(args))
    test, keep = plan["test"], [args.class_column]
    test_images = ImageSet.from_dataset(preprocess(test, processor.image_processor, keep, args.eval_split), args.class_column)
    class_names = test.features[args.class_column].names
    test_sets = [EvalSet(os.path.basename(os.path.normpath(args.dataset)), test_images, class_names, plan["masks"],
                         _subgroup_masks(test, plan["forget"], args.class_column))]
    for name, zds in plan["zeroshot"]:
        zimg = ImageSet.from_dataset(preprocess(zds, processor.image_processor, keep, name), args.class_column)
        test_sets.append(EvalSet(name, zimg, zds.features[args.class_column].names))
    return test_sets


def prepare_data(args: UnlearnArguments, processor):
    """Validate the specs, carve splits, preprocess only the rows needed. Raises before any training."""
    forget = SubgroupSpec.parse(args.forget)
    retain = SubgroupSpec.parse(args.retain) if args.retain else None
    dsd = _load_checked(args)
    train = dsd[args.train_split]
    class_names = train.features[args.class_column].names
    splits = build_splits(
        train, forget, retain, args.class_column, args.calibration_fraction, args.max_calibration, args.max_other, args.seed,
        max_forget=args.max_forget, max_retain=args.max_retain,
    )
    if len(splits.forget) == 0:
        raise SpecError(f"forget spec {args.forget!r} matches only {len(splits.calib_forget)} rows, too few to train on")
    plan = _eval_plan(args, dsd)
    # images are decoded and preprocessed only now, after every check above has passed
    keep = [args.class_column]
    order = np.concatenate([splits.forget, splits.retain, splits.other, splits.calib_forget, splits.calib_retain, splits.calib_other])
    images = ImageSet.from_dataset(preprocess(train.select(order), processor.image_processor, keep, args.train_split), args.class_column)
    parts, start = {}, 0
    for key in ("forget", "retain", "other", "calib_forget", "calib_retain", "calib_other"):
        n = len(getattr(splits, key))
        parts[key] = images.subset(range(start, start + n))
        start += n
    calib_images = ImageSet(
        torch.cat([parts[k].pixel_values for k in ("calib_forget", "calib_retain", "calib_other")]),
        torch.cat([parts[k].labels for k in ("calib_forget", "calib_retain", "calib_other")]),
    )
    sizes = [len(parts[k]) for k in ("calib_forget", "calib_retain", "calib_other")]
    role_masks = {}
    for i, role in enumerate(("forget", "retain", "other")):
        m = torch.zeros(sum(sizes), dtype=torch.bool)
        m[sum(sizes[:i]) : sum(sizes[: i + 1])] = True
        if sizes[i]:
            role_masks[role] = m
    calibration = EvalSet("calibration", calib_images, class_names, role_masks)

    return dict(forget=forget, retain=retain, splits=splits, parts=parts, calibration=calibration, plan=plan, class_names=class_names)


# The held-out sets and the original model's metrics on them depend only on these inputs, not on the seed of
# the run (unless a capped zero-shot subset is drawn) or on any training setting: a benchmark that runs many
# methods in one process prepares and scores them once. One entry: held-out sets can be large.
_HELD_OUT_CACHE: dict = {}


def _held_out_key(args: UnlearnArguments, eval_templates, bf16: bool) -> str:
    return json.dumps([os.path.abspath(args.model_name_or_path) if os.path.exists(args.model_name_or_path) else args.model_name_or_path,
                       args.dataset, args.eval_split, args.forget, args.retain, args.class_column, args.zeroshot_list,
                       args.max_eval_samples, args.seed if args.max_eval_samples else None, list(eval_templates), bf16])


def held_out(args: UnlearnArguments, processor, plan: dict, original, eval_templates) -> tuple[list[EvalSet], dict]:
    """Preprocessed held-out sets and the original model's metrics on them (memoised within the process)."""
    key = _held_out_key(args, eval_templates, precision._STATE["bf16"])
    if key not in _HELD_OUT_CACHE:
        test_sets = prepare_eval_sets(args, processor, plan=plan)
        metrics = evaluate_sets(original, processor.tokenizer, test_sets, eval_templates, subgroups=True)
        _HELD_OUT_CACHE.clear()
        _HELD_OUT_CACHE[key] = (test_sets, metrics)
    return _HELD_OUT_CACHE[key]


# ---- stages --------------------------------------------------------------------------------------------
