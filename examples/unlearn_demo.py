"""The Python API in a few lines: forget sketches of circles in the offline demo world, then use the result.

    python examples/unlearn_demo.py
"""
from transformers import pipeline

import hf_unlearn
from hf_unlearn.demo import ensure_demo
from hf_unlearn.pipeline import ForgettingIncompleteError

model_dir, data_dir = ensure_demo()  # built once, then cached (~1.5 min on 2 CPU cores)
try:
    report = hf_unlearn.unlearn(model_name_or_path=model_dir, dataset=data_dir, forget="label=circle,domain=sketch",
                                output_dir="runs/example-circle-sketch", overwrite_output_dir=True)
except ForgettingIncompleteError as err:  # the model is saved all the same; the report says by how much it missed
    print(err)
    report = err.report
print({k: round(v, 3) for k, v in report["fractions"].items()}, "composite", round(report["composite_score"], 3))

classify = pipeline("zero-shot-image-classification", model="runs/example-circle-sketch")
print("the unlearned model is a plain CLIP:", classify.model.__class__.__name__)
