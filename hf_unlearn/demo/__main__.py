"""``python -m hf_unlearn.demo [cache_dir]``: build (or reuse) the demo world and print its zero-shot accuracy per
domain and shape, with the library's own zero-shot head and evaluation (the reported prompt templates)."""
import logging
import sys

from ..data import ImageSet, load_image_dataset, preprocess
from ..evaluation import EvalSet, evaluate_sets
from ..family import load_clip
from . import DOMAINS, SHAPES, ensure_demo

logging.basicConfig(level=logging.INFO, format="%(message)s")
model_dir, data_dir = ensure_demo(sys.argv[1] if len(sys.argv) > 1 else None)
model, processor = load_clip(model_dir)
test = load_image_dataset(data_dir)["test"]
images = ImageSet.from_dataset(preprocess(test, processor.image_processor, ["label", "domain"]), "label")
domains = images.labels.new_tensor(test["domain"])
groups = {f"{d}/{s}": (domains == i) & (images.labels == j) for i, d in enumerate(DOMAINS) for j, s in enumerate(SHAPES)}
metrics = evaluate_sets(model, processor.tokenizer, [EvalSet("demo", images, SHAPES, subgroups=groups)], subgroups=True)
print(f"zero-shot test accuracy {metrics['ZS/demo']:.3f}\n{'':9}" + "".join(f"{s:>9}" for s in SHAPES))
for d in DOMAINS:
    print(f"{d:9}" + "".join(f"{metrics[f'group/demo/{d}/{s}']:9.2f}" for s in SHAPES))
