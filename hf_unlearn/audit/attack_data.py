"""What the audit's attacks read: the test set, the images and captions an attacker fine-tunes on, the probe's rows."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..data import ImageSet
from ..evaluation import EvalSet
from ..prompts import class_prompt_name
from ..spec import SubgroupSpec

RELEARN_CAPTION = "a {domain} of a {cls}."


@dataclass
class AuditData:
    test: EvalSet  # the eval split with forget / retain / other masks
    kept: ImageSet  # retain and other-class training images: what an attacker fine-tunes on
    kept_captions: list[str]
    forget: ImageSet  # forget training images, a few of which attack (b) mixes in
    forget_captions: list[str]
    train_rows: object  # the whole training split (a datasets.Dataset): the probe is fitted on every row
    class_column: str
    train_forget: torch.Tensor  # the forget subgroup's rows of that split (bool mask), whatever a run capped


def captions(train, rows, spec, class_column: str) -> list[str]:
    """"a {domain} of a {class}." per row, the domain from the spec's other column ("photo" when it has none)."""
    names = train.features[class_column].names
    other = next((c for c, _ in spec.conditions if c != class_column), None)
    labels = np.asarray(train[class_column])[rows]
    if other is None:
        return [RELEARN_CAPTION.format(domain="photo", cls=class_prompt_name(names[c])) for c in labels]
    values = np.asarray(train[other])[rows]
    words = getattr(train.features[other], "names", None)
    return [RELEARN_CAPTION.format(domain=class_prompt_name(str(words[v] if words else v)), cls=class_prompt_name(names[c]))
            for v, c in zip(values, labels)]


def prepare_audit_data(args, processor, groups, test: EvalSet, train) -> AuditData:
    """The audit's data from a run's groups (the same images the run trained on) and its test set."""
    spec = SubgroupSpec.parse(args.forget)
    splits = groups.splits
    kept = ImageSet.concat(groups.train["retain"], groups.train["other"])
    kept_rows = np.concatenate([splits.retain, splits.other])
    return AuditData(test, kept, captions(train, kept_rows, spec, args.class_column), groups.train["forget"],
                     captions(train, splits.forget, spec, args.class_column), train, args.class_column, torch.from_numpy(spec.mask(train)))



def forget_rows(test: EvalSet) -> EvalSet:
    """The test set's forget rows alone: all a relearning attack's FA reads (on CIFAR-10 a tenth of the set)."""
    mask = test.masks["forget"]
    return EvalSet(test.name, test.images.subset(mask.nonzero().flatten()), test.class_names, {"forget": torch.ones(int(mask.sum()), dtype=torch.bool)})



def data_digest(data: AuditData) -> str:
    """What the attacks read, hashed: test images, labels and masks; the attacker's images and captions; the probe's rows."""
    digest = hashlib.sha256()
    for t in (data.test.images.pixel_values, data.test.images.labels, *data.test.masks.values(), data.kept.pixel_values, data.kept.labels,
              data.forget.pixel_values, data.forget.labels):
        digest.update(t.contiguous().numpy().tobytes())
    digest.update(json.dumps([data.kept_captions, data.forget_captions, data.train_rows._fingerprint, data.class_column]).encode())
    return digest.hexdigest()
