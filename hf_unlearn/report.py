"""``unlearning_report.json``, the model card and the before/after table: one set of figures, three views."""
from __future__ import annotations

import dataclasses
import json
import os

from .evaluation import composite_score, retention_fractions

REPORT_NAME = "unlearning_report.json"


def build_report(*, args, splits, selected, ranking, stages, alpha, curve, original, unlearned, timings, train_templates, eval_templates) -> dict:
    main = {k: v for k, v in original.items() if not k.startswith("group/")}
    after = {k: v for k, v in unlearned.items() if not k.startswith("group/")}
    return {
        "model": args.model_name_or_path,
        "dataset": args.dataset,
        "forget": args.forget,
        "retain": args.retain or "(default) forget classes minus forget rows",
        "class_column": args.class_column,
        "zeroshot_datasets": args.zeroshot_list,
        "splits": splits,
        "selected_modules": selected,
        "fisher_ranking": ranking,
        "stages": stages,
        "restore": {"alpha": alpha, "fa_target": args.fa_target, "curve": curve},
        "templates": {"train": list(train_templates), "eval": list(eval_templates)},
        "metrics": {"original": main, "unlearned": after},
        "fractions": retention_fractions(after, main),
        "composite_score": composite_score(after, main),
        "subgroups": {
            k.split("/", 2)[2]: {"original": original[k], "unlearned": unlearned.get(k)}
            for k in original if k.startswith("group/")
        },
        "timings_s": timings,
        "arguments": dataclasses.asdict(args),
    }


def table_rows(result: dict) -> list[tuple[str, float, float, float]]:
    o, u = result["metrics"]["original"], result["metrics"]["unlearned"]
    rows = []
    for key in o:
        frac = u[key] / o[key] if o[key] else float("nan")
        rows.append((key, o[key], u[key], frac))
    return rows


def format_table(result: dict) -> str:
    lines = [f"Forget {result['forget']!r} (soup alpha {result['restore']['alpha']:.2f})",
             f"{'metric':<24}{'original':>10}{'unlearned':>11}{'fraction':>10}"]
    for key, o, u, frac in table_rows(result):
        lines.append(f"{key:<24}{o:>10.2%}{u:>11.2%}{frac:>10.3f}")
    lines.append(f"{'composite score':<24}{result['composite_score']:>31.3f}")
    return "\n".join(lines)


def model_card(result: dict) -> str:
    rows = "\n".join(f"| {k} | {o:.2%} | {u:.2%} | {f:.3f} |" for k, o, u, f in table_rows(result))
    stages = ", ".join(result["stages"]) + ", restore"
    base = result["model"]
    datasets = [result["dataset"], *result["zeroshot_datasets"]]
    return f"""---
base_model: {base}
tags:
- clip
- machine-unlearning
- zero-shot-image-classification
- hf_unlearn
datasets:
{chr(10).join(f"- {d}" for d in datasets)}
pipeline_tag: zero-shot-image-classification
library_name: transformers
---

# {os.path.basename(str(base))}, with the subgroup `{result['forget']}` unlearned

Made with `hf_unlearn` (forget -> remind -> restore, distilled from the frozen original).

- Forget: `{result['forget']}`; retain: `{result['retain']}`; class column `{result['class_column']}`
- Stages: {stages}; soup weight of the unlearned model: **{result['restore']['alpha']:.2f}** (chosen on calibration data carved from the training split)
- Tuned modules: {len(result['selected_modules'])} ({', '.join(result['selected_modules'][:8])}{', ...' if len(result['selected_modules']) > 8 else ''})

## Zero-shot accuracy on held-out data (prompts not used in training)

| metric | original | unlearned | fraction |
|---|---|---|---|
{rows}

Composite score (harmonic mean of forgetting and retention fractions): **{result['composite_score']:.3f}**.
FA: forget subgroup; RA: its sibling subgroups; OA: other classes; ZS: held-out datasets.

```python
from transformers import pipeline
clf = pipeline("zero-shot-image-classification", model="<this folder or repo>")
```
"""


def plot_curve(result: dict, path: str) -> str | None:
    """FA / RA / OA on calibration against alpha; skipped quietly if matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    curve = sorted(result["restore"]["curve"], key=lambda p: p["alpha"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("FA", "RA", "OA"):
        if key in curve[0]:
            ax.plot([p["alpha"] for p in curve], [p[key] for p in curve], marker="o", label=key)
    ax.axvline(result["restore"]["alpha"], color="grey", linestyle="--", label="chosen")
    ax.set_xlabel("alpha (weight of the unlearned model)")
    ax.set_ylabel("calibration accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(folder: str, result: dict) -> None:
    with open(os.path.join(folder, REPORT_NAME), "w") as f:
        json.dump(result, f, indent=2, default=str)
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(model_card(result))
    plot_curve(result, os.path.join(folder, "restore_curve.png"))
