"""``unlearning_report.json``, the model card and the before/after table: one set of figures, three views."""
from __future__ import annotations

import dataclasses
import json
import math
import os

from .checks import parse_retention_bars
from .evaluation import composite_score, retention_check, retention_fractions

REPORT_NAME = "unlearning_report.json"


def build_report(*, args, splits, selected, ranking, stages, restore, original, unlearned, timings, train_templates, eval_templates) -> dict:
    """``restore``: the soup weight, the FA target, the calibration curve and the original's calibration figures (what
    every stage's and search candidate's calibration composite is against)."""
    main = {k: v for k, v in original.items() if not k.startswith("group/")}
    after = {k: v for k, v in unlearned.items() if not k.startswith("group/")}
    fractions = retention_fractions(after, main)
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
        "restore": restore,
        "templates": {"train": list(train_templates), "eval": list(eval_templates)},
        "metrics": {"original": main, "unlearned": after},
        "forgetting_achieved": forgetting_achieved(restore, after, args.fa_target),
        "fractions": fractions,
        "retention": retention_check(fractions, parse_retention_bars(args.retention_bars)),
        "composite_score": composite_score(after, main),
        "subgroups": {
            k.split("/", 2)[2]: {"original": original[k], "unlearned": unlearned.get(k)}
            for k in original if k.startswith("group/")
        },
        "timings_s": timings,
        "arguments": dataclasses.asdict(args),
    }


def forgetting_achieved(restore: dict, unlearned: dict, fa_target: float) -> bool:
    """The final model forgot: its FA is at most the target on calibration data (the chosen soup) and on test data."""
    chosen = next(p for p in restore["curve"] if p["alpha"] == restore["alpha"])
    return bool(chosen["FA"] <= fa_target + 1e-12 and unlearned["FA"] <= fa_target + 1e-12)


def outcome(result: dict) -> str:
    """One line on whether the subgroup was forgotten, with the figures that decide it: the calibration FA with its image
    count, and, where the calibration set is too small to resolve the target, that it allows no recognised image."""
    chosen = next(p for p in result["restore"]["curve"] if p["alpha"] == result["restore"]["alpha"])
    fa, target = result["metrics"]["unlearned"]["FA"], result["restore"]["fa_target"]
    n = (result.get("splits") or {}).get("calib_forget")  # absent in a report made before the splits were recorded
    count = f"{round(chosen['FA'] * n)} of {n} images" if n else ""
    if result["forgetting_achieved"]:
        return (f"The subgroup {result['forget']!r} was forgotten: FA {fa:.2%} on test, {chosen['FA']:.2%} on calibration "
                f"({count + '; ' if count else ''}target {target:.2%}).")
    line = (f"The subgroup {result['forget']!r} was NOT forgotten: FA {fa:.2%} on test, {chosen['FA']:.2%} on calibration"
            f"{f' ({count})' if count else ''}, above the "
            f"target {target:.2%} (original {result['metrics']['original']['FA']:.2%}).")
    if n and chosen["FA"] > target and target * n < 1:  # the target asks for zero images: one survivor fails it
        one = math.ceil(1e4 / n) / 1e4  # one image's FA, rounded up so that the value printed does allow it
        line += (f" With {n} calibration images of the subgroup the target allows none to be recognised; a larger "
                 f"--calibration_fraction or --fa_target {one:.4f} allows one.")
    return line


def retention_outcome(result: dict) -> str | None:
    """One line on whether the final model kept what it was asked to keep (None for a report made before the check)."""
    check = result.get("retention")
    if check is None:
        return None
    verdict, shown = ("kept", check["checked"]) if check["kept"] else ("LOST", check["missed"])
    return f"Retention {verdict}: " + ", ".join(f"{k} {m['fraction']:.3f} (bar {m['bar']:g})" for k, m in shown.items()) + " of the original's accuracy."


def table_rows(metrics: dict) -> list[tuple[str, float, float, float]]:
    """(metric, original, unlearned, fraction) for each metric of ``metrics["original"]``."""
    after = metrics["unlearned"]
    return [(k, o, after[k], after[k] / o if o else float("nan")) for k, o in metrics["original"].items()]


def metrics_table(metrics: dict, composite: float) -> list[str]:
    """The before/after table's lines (``metrics``: {"original": ..., "unlearned": ...}), a run's and ``eval_cli``'s."""
    return [f"{'metric':<24}{'original':>10}{'unlearned':>11}{'fraction':>10}",
            *(f"{k:<24}{o:>10.2%}{u:>11.2%}{frac:>10.3f}" for k, o, u, frac in table_rows(metrics)),
            f"{'composite score':<24}{composite:>31.3f}"]


def format_table(result: dict) -> str:
    retention = retention_outcome(result)  # None in a report written before the retention check
    lines = [f"Forget {result['forget']!r} (soup alpha {result['restore']['alpha']:.2f})",
             *metrics_table(result["metrics"], result["composite_score"]), outcome(result), *([retention] if retention else [])]
    if result.get("audit"):
        from .audit.outcome import verdict_lines

        lines += ["", *verdict_lines(result["audit"])]
    return "\n".join(lines)


def _hub_id(name: str) -> str | None:
    """Hub ids go into YAML metadata as they are; local paths (meaningless on the Hub) are left out."""
    return None if not name or os.path.exists(name) or name.startswith((".", "/")) else name


def card_metadata(result: dict):
    """``huggingface_hub.ModelCardData`` with a model-index of the after-unlearning metrics, so the Hub renders them."""
    from huggingface_hub import EvalResult, ModelCardData

    name = f"{os.path.basename(str(result['model']))}-unlearned"
    dataset = os.path.basename(os.path.normpath(str(result["dataset"])))
    evals = []
    for key, _, after, _ in table_rows(result["metrics"]):
        ds = key.split("/", 1)[1] if key.startswith("ZS/") else dataset
        label = {"FA": "forget accuracy (FA)", "RA": "retain accuracy (RA)", "OA": "other-class accuracy (OA)"}.get(key, f"zero-shot accuracy ({ds})")
        evals.append(EvalResult(task_type="zero-shot-image-classification", dataset_type=_hub_id(ds) or ds, dataset_name=ds,
                                metric_type="accuracy", metric_value=round(float(after), 6), metric_name=label))
    datasets = [d for d in (_hub_id(str(result["dataset"])), *(_hub_id(z) for z in result["zeroshot_datasets"])) if d]
    return ModelCardData(
        base_model=_hub_id(str(result["model"])), tags=["clip", "machine-unlearning", "zero-shot-image-classification", "hf_unlearn"],
        datasets=datasets or None, pipeline_tag="zero-shot-image-classification", library_name="transformers",
        model_name=name, eval_results=evals,
    )


def model_card(result: dict) -> str:
    rows = "\n".join(f"| {k} | {o:.2%} | {u:.2%} | {f:.3f} |" for k, o, u, f in table_rows(result["metrics"]))
    base = result["model"]
    method = result.get("method", "forget_remind_restore")
    ours = method == "forget_remind_restore"
    stages = ", ".join(result["stages"]) + (", restore" if ours else "")
    title = (f"{os.path.basename(str(base))}, with the subgroup `{result['forget']}` unlearned" if result["forgetting_achieved"]
             else f"{os.path.basename(str(base))}, NOT unlearned: the subgroup `{result['forget']}` was not forgotten")
    audit, audit_line = "", ""
    if result.get("audit"):
        from .audit.outcome import audit_outcome, card_section

        audit, audit_line = card_section(result["audit"]), f" {audit_outcome(result['audit'], 'the Robustness audit section below')}"
    retention_line = f" **{retention_outcome(result)}**" if result.get("retention") else ""
    how = "forget -> remind -> restore, distilled from the frozen original" if ours else f"the `{method}` baseline of its benchmark, from the original"
    return f"""---
{card_metadata(result).to_yaml()}
---

# {title}

**{outcome(result)}**{audit_line}{retention_line}

Made with `hf_unlearn` ({how} `{base}`).

- Forget: `{result['forget']}`; retain: `{result['retain']}`; class column `{result['class_column']}`; data `{result['dataset']}`
- Stages: {stages}; soup weight of the unlearned model: **{result['restore']['alpha']:.2f}** (chosen on calibration data carved from the training split)
- Tuned modules: {len(result['selected_modules'])} ({', '.join(result['selected_modules'][:8])}{', ...' if len(result['selected_modules']) > 8 else ''})

## Zero-shot accuracy on held-out data (prompts not used in training)

| metric | original | unlearned | fraction |
|---|---|---|---|
{rows}

Composite score (harmonic mean of forgetting and retention fractions): **{result['composite_score']:.3f}**.
FA: forget subgroup; RA: its sibling subgroups; OA: other classes; ZS: held-out datasets.

{audit}
```python
from transformers import pipeline
clf = pipeline("zero-shot-image-classification", model="<this folder or repo>")
```
"""


def plot_curve(result: dict, path: str) -> str:
    """FA / RA / OA on calibration against alpha, the chosen alpha marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
