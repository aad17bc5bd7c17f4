"""Which stage of a run costs held-out zero-shot accuracy, and on which classes.

    python benchmarks/zeroshot_by_stage.py runs/cifar-automobile

Scores the original (``--model_name_or_path`` from the run's report), each stage folder the run kept under
``stages/`` and the final model on the zero-shot sets alone, with ``prompts.EVAL_TEMPLATES`` under the run's
precision, and prints each set's accuracy, the classes that moved most and the class predicted most more often.
Held-out figures to read, not to tune on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hf_unlearn import precision  # noqa: E402
from hf_unlearn.config import DatasetArguments  # noqa: E402
from hf_unlearn.evaluation import accuracy, predict  # noqa: E402
from hf_unlearn.family import load_clip  # noqa: E402
from hf_unlearn.groups import load_checked, plan_eval, prepare_eval_sets  # noqa: E402
from hf_unlearn.run import device  # noqa: E402


def per_class(model, tokenizer, s) -> tuple[float, dict[str, float], dict[str, int]]:
    """Accuracy, accuracy per class, and how many images are predicted as each class (where the lost ones went)."""
    pred, labels = predict(model, tokenizer, s), s.images.labels
    return (accuracy(pred, labels), {c: accuracy(pred, labels, labels == i) for i, c in enumerate(s.class_names)},
            {c: int((pred == i).sum()) for i, c in enumerate(s.class_names)})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run's --output_dir")
    p.add_argument("--zeroshot_datasets", help="comma-separated zero-shot datasets (default: the run's)")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)
    report = json.load(open(os.path.join(a.run, "unlearning_report.json")))
    inputs = report["arguments"]
    data = DatasetArguments(dataset=inputs["dataset"], forget=inputs["forget"], retain=inputs.get("retain"), class_column=inputs["class_column"],
                            zeroshot_datasets=a.zeroshot_datasets or inputs["zeroshot_datasets"])
    precision.set_default("bf16" in report["compute"]["precision"])
    attn = precision.attn_implementation(device())
    models = [("original", inputs["model_name_or_path"])]
    models += [(f"after {n}", os.path.join(a.run, "stages", n)) for n in report["stages"] if os.path.isdir(os.path.join(a.run, "stages", n))]
    models.append(("final", a.run))
    out, sets = {}, None
    for name, path in models:
        model, proc = load_clip(path, attn)
        if sets is None:  # preprocessed with the original's processor, as a run does
            sets = prepare_eval_sets(data, proc, plan_eval(data, load_checked(data, splits=(data.eval_split,))))[1:]
        with precision.autocast(device()):
            out[name] = {s.name: per_class(model, proc.tokenizer, s) for s in sets}
    for s in sets:
        before = out["original"][s.name][1]
        print(f"\n{s.name}: " + ", ".join(f"{n} {r[s.name][0]:.2%}" for n, r in out.items()))
        moved = sorted(before, key=lambda c: out["final"][s.name][1][c] - before[c])[:3]
        for c in moved:
            print(f"  {c}: " + " -> ".join(f"{r[s.name][1][c]:.1%}" for r in out.values()))
        counts = out["original"][s.name][2]
        gained = max(counts, key=lambda c: out["final"][s.name][2][c] - counts[c])
        print(f"  predicted most more often: {gained}, " + " -> ".join(str(r[s.name][2][gained]) for r in out.values()) + f" of {len(s.images)} images")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
