"""Methods (or ablation variants) x tasks x seeds in one process, written to docs/BENCHMARKS.md.

    python benchmarks/unlearning.py --suite ablation --tasks pacs-dog-sketch --seeds 0,1,2
    python benchmarks/unlearning.py --suite methods --tasks all --seeds 0,1,2
    python benchmarks/unlearning.py --suite tune --tasks pacs-person-art --variants "e10:forget_epochs=10;k16:top_k_modules=16"

Every cell is one ``hf_unlearn.unlearn`` run with ``../shared/models/mini-clip-64``; its figures go to
``runs/benchmarks/<suite>/<task>/<variant>/s<seed>/cell.json`` (written atomically) and a finished cell is never
recomputed, so an interrupted benchmark continues where it stopped. The held-out sets and the original model's
metrics are prepared once per task in the process (``inputs.held_out``), not once per cell.

Columns: FA (absolute, lower is better); RA, OA, ZS as fractions of the original model's accuracy; the composite
score (harmonic mean of forgetting and the clipped fractions); "method s": wall seconds of layer selection +
training stages + restore search (what differs between methods); "run s": the whole cell (marked * when a cell
was resumed after an interruption: then it counts only the resuming process).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
MODEL = os.path.join(SHARED, "models", "mini-clip-64")
DATA = {name: os.path.join(SHARED, "datasets", name) for name in ("pacs", "cifar10", "imagenette")}

def _pacs(forget: str) -> dict:
    """A PACS task: the held-out zero-shot sets are the other two datasets."""
    return dict(dataset="pacs", forget=forget, zeroshot=("cifar10", "imagenette"))


TASKS = {
    "pacs-dog-sketch": _pacs("label=dog,domain=sketch"),
    "pacs-person-art": _pacs("label=person,domain=art_painting"),
    "pacs-elephant-cartoon": _pacs("label=elephant,domain=cartoon"),
    "pacs-horse-cartoon": _pacs("label=horse,domain=cartoon"),
    "pacs-giraffe-sketch": _pacs("label=giraffe,domain=sketch"),
    "pacs-elephant-sketch": _pacs("label=elephant,domain=sketch"),
    # Issue 14's subgroups besides dog/sketch, chosen before any of their audit results were seen.
    "pacs-horse-sketch": _pacs("label=horse,domain=sketch"),
    "pacs-giraffe-cartoon": _pacs("label=giraffe,domain=cartoon"),
    "pacs-guitar-art": _pacs("label=guitar,domain=art_painting"),
    # A whole CIFAR-10 class is 4,250 training images: 1,000 of each stream keep a cell's budget near the PACS ones.
    "cifar-automobile-vs-truck": dict(dataset="cifar10", forget="label=automobile", retain="label=truck", zeroshot=("imagenette",),
                                      max_forget=1000, max_retain=1000),
    "cifar-red-automobile": dict(dataset="cifar10", forget="label=automobile,color=red", attributes="color", zeroshot=("imagenette",),
                                 max_forget=1000, max_retain=1000),
}

# ``--tasks all``: the methods comparison's five tasks (the other PACS subgroups above are run by name).
BENCHMARK_TASKS = ("pacs-dog-sketch", "pacs-person-art", "pacs-elephant-cartoon", "cifar-automobile-vs-truck", "cifar-red-automobile")

SUITES = {
    "ablation": {
        "full": {},
        "no_layer_selection": {"no_layer_selection": True},
        "no_lora": {"no_lora": True},
        "no_remind": {"no_remind": True},
        "no_restore": {"no_restore": True},
        "no_distill": {"no_distill": True},
    },
    "methods": {"forget_remind_restore": {}},  # baselines are added by --method (see hf_unlearn.methods)
    "audit": {"forget_remind_restore": {}},  # the method at the product's defaults; baselines at CALIBRATED's settings
}

# What the methods table's calibration search chose per baseline (docs/BENCHMARKS.md, "Baselines in one harness"):
# the audit suite reuses the choice instead of repeating the search.
CALIBRATED = {
    "pacs-dog-sketch": {
        "ga": {"baseline_learning_rate": 1e-5},
        "neggrad_plus": {"baseline_learning_rate": 1e-5, "baseline_weight": 0.5},
        "ft": {"baseline_learning_rate": 1e-4},
        "rl": {"baseline_learning_rate": 1e-4, "baseline_weight": 0.5},
        "scrub": {"baseline_learning_rate": 1e-4, "baseline_weight": 0.5},
        "salun": {"baseline_learning_rate": 1e-4, "baseline_weight": 0.5},
        "clip_erase": {"baseline_learning_rate": 1e-4, "baseline_weight": 1.0},
    },
}


def _parse_variants(text: str) -> dict[str, dict]:
    """'name:key=value,key=value;name2:...' -> {name: {key: typed value}} (types from UnlearnArguments)."""
    import typing

    from hf_unlearn import UnlearnArguments

    hints = typing.get_type_hints(UnlearnArguments)

    def cast(key: str, value: str):
        base = next((t for t in typing.get_args(hints[key]) if t is not type(None)), hints[key])
        if base is bool:
            return value.lower() in ("1", "true", "yes")
        return base(value) if base in (int, float) else value

    out = {}
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        name, _, body = chunk.partition(":")
        flags = {}
        for pair in filter(None, re.split(r",(?=\w+=)", body)):  # a value may hold commas: target_modules=v_proj,fc1
            key, _, value = pair.partition("=")
            if key not in hints:
                raise SystemExit(f"unknown setting {key!r} in variant {name!r}")
            flags[key] = cast(key, value)
        out[name] = flags
    return out


def _fixed(cell: dict) -> dict:
    """The hyperparameters a searched cell chose, as flags that fix them (no search) for the next seeds."""
    chosen = dict(cell["hyperparameters"]["chosen"])
    lr = chosen.pop("learning_rate")
    if cell["flags"].get("method", "forget_remind_restore") == "forget_remind_restore":
        return {"forget_learning_rate": lr, "forget_weight": chosen["forget_weight"]}
    out = {"baseline_learning_rate": lr}
    if chosen:
        out["baseline_weight"] = next(iter(chosen.values()))
    return out


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def code_version(root: str = ROOT) -> str | None:
    """The commit a cell ran at, ``-dirty`` if the package or the harness had uncommitted changes (the cells the
    harness itself writes under ``benchmarks/cells`` do not count); None outside git."""
    def git(*cmd):
        return subprocess.run(["git", "-C", root, *cmd], capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "hf_unlearn", "benchmarks", "recipes", ":(exclude)benchmarks/cells")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def cell_folder(out_root: str, suite: str, task: str, variant: str, seed: int) -> str:
    return os.path.join(out_root, suite, task, variant, f"s{seed}")


def finished_cell(out_root: str, suite: str, task: str, variant: str, seed: int) -> dict | None:
    path = os.path.join(cell_folder(out_root, suite, task, variant, seed), "cell.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def audit_summary(audit: dict | None) -> dict | None:
    """The figures of a report's audit section a table reads: each model's attacks, the verdicts and their bars."""
    if not audit:
        return None
    models = {}
    for name in ("unlearned", "original", "reference"):
        if name in audit:
            r = audit[name]
            models[name] = {"FA": r["FA"], "worst_FA": r["phrasing"]["worst_FA"], "worst_phrasing": r["phrasing"]["worst_phrasing"],
                            "mean_FA": r["phrasing"]["mean_FA"], "relearn_retain_only": r["relearn_retain_only"],
                            "relearn_retain_plus_forget": r["relearn_retain_plus_forget"], "probe": r["probe"]}
    return {**models, "verdicts": {k: v["verdict"] for k, v in audit["verdicts"].items()},
            "bars": {k: v["bar"] for k, v in audit["verdicts"].items()}, "seconds": audit.get("seconds")}


def run_cell(out_root: str, suite: str, task: str, variant: str, flags: dict, seed: int, keep_models: bool = False,
             run_settings: dict | None = None) -> dict:
    from hf_unlearn import UnlearnArguments, unlearn
    from hf_unlearn.outputs import staging_folder

    done = finished_cell(out_root, suite, task, variant, seed)
    if done is not None:
        return done
    folder = cell_folder(out_root, suite, task, variant, seed)
    path = os.path.join(folder, "cell.json")
    spec = TASKS[task]
    settings = dict(
        model_name_or_path=MODEL, dataset=DATA[spec["dataset"]], forget=spec["forget"], retain=spec.get("retain"),
        attributes=spec.get("attributes"), max_forget=spec.get("max_forget"), max_retain=spec.get("max_retain"), zeroshot_datasets=",".join(DATA[z] for z in spec["zeroshot"]),
        output_dir=os.path.join(folder, "model"), overwrite_output_dir=True, seed=seed, logging_steps=50,
        allow_incomplete_forgetting=True,  # a method that fails to forget is a result of the table
    )
    args = UnlearnArguments(**{**settings, **(run_settings or {}), **flags})
    # an interrupted cell continues from its staged stages; its wall time then covers only this process
    resumed = os.path.isdir(staging_folder(args.output_dir))
    code = code_version()  # before the run: the code it imports now, not whatever is checked out when it ends
    t0, c0 = time.time(), _cpu_seconds()
    report = unlearn(args)
    wall, cpu = time.time() - t0, _cpu_seconds() - c0
    timings = report["timings_s"]
    method_s = sum(v for k, v in timings.items() if k not in ("data_s", "eval_original_s", "eval_final_s", "audit_s", "total_s"))
    cell = dict(
        suite=suite, task=task, variant=variant, seed=seed, flags=flags, metrics=report["metrics"], fractions=report["fractions"],
        composite=report["composite_score"], alpha=report["restore"]["alpha"], subgroups=report["subgroups"],
        selected_modules=report["selected_modules"], timings=timings, method_s=method_s, wall_s=wall, cpu_s=cpu,
        hyperparameters=report.get("hyperparameters"), resumed=resumed, code=code, forgetting_achieved=report["forgetting_achieved"],
        audit=audit_summary(report.get("audit")), compute=report.get("compute"),
    )
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cell, f, indent=2, default=str)
    os.replace(tmp, path)
    if not keep_models:
        shutil.rmtree(os.path.join(folder, "model"), ignore_errors=True)
    return cell


def _ms(values, fmt="{:.3f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = float(np.mean(values))
    if len(values) == 1:
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format(float(np.std(values, ddof=1)))}"


BARS = {"FA": 0.01, "RA": 0.98, "OA": 0.99, "ZS/*": 0.99}  # the paper-machinery acceptance bars (FA absolute)


def misses(cells: list[dict]) -> str:
    """The bars the mean over seeds misses: FA above 1 %, RA under 98 %, OA or any zero-shot set under 99 %."""
    fa = np.mean([c["metrics"]["unlearned"]["FA"] for c in cells])
    out = [f"FA {fa:.1%}"] if fa > BARS["FA"] + 1e-9 else []
    for key in sorted(cells[0]["fractions"]):
        bar = BARS["ZS/*"] if key.startswith("ZS/") else BARS.get(key)
        if bar is not None and key != "forgetting":
            value = np.mean([c["fractions"][key] for c in cells])
            if value < bar:
                out.append(f"{key} {value:.3f}")
    return ", ".join(out)


def by_variant(cells: list[dict], variants: list[str]) -> dict[str, list[dict]]:
    """The cells of each variant that has any, in the suite's order."""
    groups = {v: [c for c in cells if c["variant"] == v] for v in variants}
    return {v: cs for v, cs in groups.items() if cs}


def table(cells: list[dict], variants: list[str]) -> str:
    pct = "{:.1%}"
    zs_names = sorted(k for k in cells[0]["fractions"] if k.startswith("ZS/"))
    head = ("| variant | seeds | FA | RA fraction | OA fraction | ZS fraction (mean) | " + "".join(f"{k} | " for k in zs_names)
            + "composite | alpha | method s | run s | misses |\n|" + "---|" * (11 + len(zs_names)))
    rows = []
    for v, cs in by_variant(cells, variants).items():
        f = lambda key: [c["fractions"].get(key) for c in cs]  # noqa: E731
        rows.append(
            f"| {v} | {len(cs)} | {_ms([c['metrics']['unlearned']['FA'] for c in cs], pct)} | {_ms(f('RA'))} | {_ms(f('OA'))} "
            f"| {_ms(f('ZS'))} | " + "".join(f"{_ms(f(k))} | " for k in zs_names) + f"{_ms([c['composite'] for c in cs])} | {_ms([c['alpha'] for c in cs], '{:.2f}')} "
            f"| {_ms([c['method_s'] for c in cs], '{:.0f}')} | {_ms([c['wall_s'] for c in cs], '{:.0f}')}{'*' if any(c.get('resumed') for c in cs) else ''} "
            f"| {misses(cs) or 'none'} |"
        )
    o = cells[0]["metrics"]["original"]
    zs = [v for k, v in o.items() if k.startswith("ZS/")]
    orig = f"Original model: FA {o['FA']:.1%}, RA {o['RA']:.1%}, OA {o.get('OA', float('nan')):.1%}" + (f", mean ZS {np.mean(zs):.1%}" if zs else "")
    note = ""
    if any(c.get("resumed") for c in cells):
        note = ("\n\n\\* includes a cell resumed after an interruption: its run s counts only the resuming process; method s "
                "counts every stage in full (a finished stage its recorded seconds, an interrupted one its seconds before the interruption too).")
    return orig + "\n\n" + head + "\n" + "\n".join(rows) + note


def code_line(cells: list[dict]) -> str:
    """Which commits the cells ran at (cells written before the harness recorded it are counted as unrecorded)."""
    counts = Counter(c.get("code") or "unrecorded" for c in cells)
    if set(counts) == {"unrecorded"}:
        return ""
    return "- Code the cells ran at: " + ", ".join(f"{k} ({n})" for k, n in sorted(counts.items())) + "."


def chosen(cells: list[dict], variants: list[str]) -> str:
    """The hyperparameters each method's search chose (first seed's calibration split), one line."""
    out = []
    for v, cs in by_variant(cells, variants).items():
        c = next((c for c in cs if (c.get("hyperparameters") or {}).get("search")), None)
        if c:
            out.append(f"{v} " + ", ".join(f"{k} {val:g}" for k, val in c["hyperparameters"]["chosen"].items()))
    return "; ".join(out)


# column -> (how to read it from a cell, higher is better)
COLUMNS = {
    "FA": (lambda c: c["metrics"]["unlearned"]["FA"], False),
    "RA": (lambda c: c["fractions"].get("RA"), True),
    "OA": (lambda c: c["fractions"].get("OA"), True),
    "ZS": (lambda c: c["fractions"].get("ZS"), True),
    "composite": (lambda c: c["composite"], True),
    "method s": (lambda c: c["method_s"], False),
}


def wins(cells: list[dict], variants: list[str], ours: str) -> str:
    """In plain words: which variant has the best mean composite, and every column where one beats ``ours``."""
    groups = by_variant(cells, variants)
    means = {v: {k: float(np.mean([get(c) for c in cs])) for k, (get, _) in COLUMNS.items() if all(get(c) is not None for c in cs)}
             for v, cs in groups.items()}
    if ours not in means or len(means) < 2:
        return ""
    best = max(means, key=lambda v: means[v]["composite"])
    lines = [f"Best mean composite: **{best}** ({means[best]['composite']:.3f})"
             + ("." if best == ours else f"; {ours} has {means[ours]['composite']:.3f}.")]
    # a lead smaller than the seeds' spread is a tie, and the doc should call it one
    sd = {v: float(np.std([c["composite"] for c in cs], ddof=1)) if len(cs) > 1 else 0.0 for v, cs in groups.items()}
    close = [v for v in means if v != best and means[best]["composite"] - means[v]["composite"] <= sd[best] + sd[v] + 1e-9]
    if close:
        lines.append("Not separated from it by the seeds (the gap is within the sum of the two standard deviations): "
                     + ", ".join(f"{v} {means[v]['composite']:.3f} ± {sd[v]:.3f} ({len(groups[v])} seed{'s' * (len(groups[v]) > 1)})"
                                 for v in close) + ".")
    for k, (_, higher) in COLUMNS.items():
        if k == "composite" or k not in means[ours]:
            continue
        ahead = [v for v in means if v != ours and k in means[v]
                 and (means[v][k] > means[ours][k] + 1e-9 if higher else means[v][k] < means[ours][k] - 1e-9)]
        if ahead:
            fmt = (lambda x: f"{x:.1%}") if k == "FA" else (lambda x: f"{x:.0f}") if k == "method s" else (lambda x: f"{x:.3f}")
            lines.append(f"Ahead of {ours} on {k} ({fmt(means[ours][k])}): " + ", ".join(f"{v} {fmt(means[v][k])}" for v in ahead) + ".")
    return "\n".join(f"- {line}" for line in lines)


# attack -> (column, the audit summary's key); every score is lower-is-deeper
ATTACKS = {"phrasing": ("worst phrasing FA", "worst_FA"), "relearn_retain_only": ("relearn (a): retain only", "relearn_retain_only"),
           "relearn_retain_plus_forget": ("relearn (b): retain + 16 forget", "relearn_retain_plus_forget"),
           "probe": ("linear probe", "probe")}


def _attack_means(cells: list[dict]) -> dict[str, float]:
    return {a: float(np.mean([c["audit"]["unlearned"][key] for c in cells])) for a, (_, key) in ATTACKS.items()}


def depth(cells: list[dict]) -> tuple[int, float]:
    """How deep the forgetting goes: how many attacks it holds (mean score at or under the bar; more is deeper), then the
    mean score-to-bar ratio over the attacks (lower is deeper: how close the attacks come on average)."""
    bars, means = cells[0]["audit"]["bars"], _attack_means(cells)
    ratios = [means[a] / max(bars[a], 1e-9) for a in ATTACKS]
    return sum(r <= 1 + 1e-9 for r in ratios), float(np.mean(ratios))


def _depth_text(cells: list[dict]) -> str:
    held, ratio = depth(cells)
    return f"{held}/{len(ATTACKS)} held, {ratio:.2f}"


def audit_table(cells: list[dict], variants: list[str]) -> str:
    """Each variant's audit, mean ± std over seeds, with the original's figures and the bars the verdicts use."""
    audited = [c for c in cells if c.get("audit")]
    if not audited:
        return ""
    pct = "{:.1%}"
    head = ("| variant | seeds | FA (reported templates) | mean phrasing FA | " + " | ".join(name for name, _ in ATTACKS.values())
            + " | shallow on | depth: attacks held, mean score / bar |\n|" + "---|" * (6 + len(ATTACKS)))
    o, bars = audited[0]["audit"]["original"], audited[0]["audit"]["bars"]
    rows = [head, f"| original | | {o['FA']:.1%} | {o['mean_FA']:.1%} | " + " | ".join(f"{o[key]:.1%}" for _, key in ATTACKS.values()) + " | | |",
            "| bar (forgotten at or under) | | | | " + " | ".join(f"{bars[a]:.1%}" for a in ATTACKS) + " | | |"]
    for v, cs in by_variant(audited, variants).items():
        get = lambda key: [c["audit"]["unlearned"][key] for c in cs]  # noqa: E731
        means = _attack_means(cs)
        shallow = [ATTACKS[a][0] for a in ATTACKS if means[a] > bars[a] + 1e-12]
        rows.append(f"| {v} | {len(cs)} | {_ms(get('FA'), pct)} | {_ms(get('mean_FA'), pct)} | "
                    + " | ".join(_ms(get(key), pct) for _, key in ATTACKS.values())
                    + f" | {', '.join(shallow) or 'none'} | {_depth_text(cs)} |")
    return "\n".join(rows)


def depth_lines(cells: list[dict], variants: list[str], ours: str) -> str:
    """In plain words: the deepest variant overall and among those that keep every bar, and each attack on which
    a variant is deeper than ``ours``."""
    groups = by_variant([c for c in cells if c.get("audit")], variants)
    if ours not in groups:
        return ""
    ranked = sorted(groups, key=lambda v: (-depth(groups[v])[0], depth(groups[v])[1]))
    lines = [f"Deepest (most attacks held, then the lowest mean score-to-bar ratio): **{ranked[0]}** ({_depth_text(groups[ranked[0]])})"
             + ("." if ranked[0] == ours else f"; {ours}: {_depth_text(groups[ours])}.")]
    keeping = [v for v in ranked if not misses(groups[v])]
    fractions = next(iter(groups.values()))[0]["fractions"]
    bars = ["FA"] + [k for k in ("RA", "OA") if k in fractions] + (["ZS"] if any(k.startswith("ZS/") for k in fractions) else [])
    lines.append(f"Deepest of those that keep the {', '.join(bars)} bars: "
                 + (f"**{keeping[0]}** ({_depth_text(groups[keeping[0]])})." if keeping else "none keeps them all."))
    means = {v: _attack_means(cs) for v, cs in groups.items()}
    for a, (name, _) in ATTACKS.items():
        ahead = [v for v in groups if v != ours and means[v][a] < means[ours][a] - 1e-9]
        if ahead:
            lines.append(f"Deeper than {ours} on {name} ({means[ours][a]:.1%}): " + ", ".join(f"{v} {means[v][a]:.1%}" for v in ahead) + ".")
    return "\n".join(f"- {line}" for line in lines)


def heatmap(cells: list[dict], variants: list[str], path: str, title: str) -> str | None:
    """Per-subgroup test accuracy (mean over seeds) for each method: where forgetting and collateral damage fall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(cells[0]["subgroups"])
    if not groups:
        return None
    rows, names = [[cells[0]["subgroups"][g]["original"] for g in groups]], ["original"]
    for v, cs in by_variant(cells, variants).items():
        rows.append([float(np.mean([c["subgroups"][g]["unlearned"] for c in cs])) for g in groups])
        names.append(v)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(groups) + 2), 0.45 * len(names) + 1.8))
    im = ax.imshow(np.array(rows), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(groups)), [g.split("/", 1)[-1] for g in groups], rotation=75, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_doc(doc: str, marker: str, text: str) -> None:
    """Replace the block between <!-- marker:start --> and <!-- marker:end --> (appended if absent)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    body = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
    block = f"{start}\n{text}\n{end}"
    if start in body and end in body:
        body = body[: body.index(start)] + block + body[body.index(end) + len(end):]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    tmp = doc + ".tmp"
    with open(tmp, "w") as f:
        f.write(body)
    os.replace(tmp, doc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="ablation")
    p.add_argument("--tasks", default="pacs-dog-sketch", help=f"comma-separated names from {', '.join(TASKS)}; 'all': {', '.join(BENCHMARK_TASKS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=None, help="'name:key=value,...;name2:...' instead of the suite's own")
    p.add_argument("--only", default=None, help="comma-separated subset of the suite's variants to run")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "benchmarks"))
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--marker", default=None, help="name of the block in --doc to (re)write; default: the suite")
    p.add_argument("--keep-models", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the tables from the cells already finished, listing the missing ones")
    p.add_argument("--cpu_threads", type=int, default=None,
                   help="torch threads of each cell (two benchmark processes of one thread each: 1); not part of a cell's identity")
    p.add_argument("--no-audit", dest="no_audit", action="store_true",
                   help="skip each cell's robustness audit (no table but the audit suite's reads it); not part of a cell's identity")
    p.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                   help="the calibration hyperparameter search for every method (default: on for --suite methods)")
    a = p.parse_args(argv)

    variants = _parse_variants(a.variants) if a.variants else dict(SUITES.get(a.suite, {}))
    if a.suite == "methods" and not a.variants:
        from hf_unlearn.methods import METHODS

        variants.update({m: {"method": m} for m in METHODS if m != "forget_remind_restore"})
    a.search = (a.suite == "methods") if a.search is None else a.search
    tasks = list(BENCHMARK_TASKS) if a.tasks == "all" else a.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choices: {', '.join(TASKS)}")
    calibrated = a.suite == "audit" and not a.variants  # the baselines run at CALIBRATED's settings for each task
    if calibrated:
        uncalibrated = [t for t in tasks if t not in CALIBRATED]
        if uncalibrated:
            raise SystemExit(f"--suite audit reuses the methods table's calibrated settings, recorded for {', '.join(CALIBRATED)} "
                             f"only, not {', '.join(uncalibrated)}")
        variants.update({m: {"method": m} for m in CALIBRATED[tasks[0]]})
    if a.only:
        unknown = [k for k in a.only.split(",") if k not in variants]
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown} for --only; choices: {', '.join(variants)}")
        variants = {k: variants[k] for k in a.only.split(",")}
    run_settings = {"cpu_threads": a.cpu_threads} if a.cpu_threads else {}
    if a.no_audit:
        if a.suite == "audit":
            raise SystemExit("--no-audit: the audit suite's table is the audit")
        run_settings["no_audit"] = True
    if a.suite == "audit":  # the held-out zero-shot sets are the methods table's; here they would double a cell's evaluation
        run_settings["zeroshot_datasets"] = None
    seeds = [int(s) for s in a.seeds.split(",")]
    given = [x for x in (sys.argv[1:] if argv is None else argv) if x not in ("--report-only", "--no-doc")]
    command = "python benchmarks/unlearning.py " + " ".join(given)  # what reproduces the cells, not this report
    sections = []
    for task in tasks:
        cells, missing = [], []
        for v, flags in variants.items():
            for i, seed in enumerate(seeds):
                if a.report_only:
                    cell = finished_cell(a.out, a.suite, task, v, seed)
                    cells += [cell] if cell else []
                    missing += [] if cell else [f"{v}/s{seed}"]
                    continue
                run_flags = dict(flags, **(CALIBRATED[task].get(v, {}) if calibrated else {}))
                if a.search:  # tuned once, on the first seed's calibration split; later seeds reuse the choice
                    run_flags.update(_fixed(cells[-1]) if i else {"hp_search": True})
                cells.append(run_cell(a.out, a.suite, task, v, run_flags, seed, a.keep_models, run_settings))
        if not cells:
            sections.append(f"#### {task}\n\nNo finished cells yet.")
            continue
        spec = TASKS[task]
        text = f"#### {task}: forget `{spec['forget']}`" + (f", retain `{spec['retain']}`" if spec.get("retain") else "")
        caps = [f"--{k} {spec[k]}" for k in ("max_forget", "max_retain") if spec.get(k)]
        text += (f" (training images capped: `{' '.join(caps)}`)" if caps else "") + "\n\n"
        text += table(cells, list(variants))
        if missing:
            text += f"\n\nNot run yet ({len(missing)} cells): " + ", ".join(missing) + "."
        if a.suite == "audit":
            text += "\n\n" + audit_table(cells, list(variants)) + "\n\n" + depth_lines(cells, list(variants), "forget_remind_restore")
        if a.suite == "methods":
            picked = chosen(cells, list(variants))
            text += "\n\n" + "\n".join(filter(None, [wins(cells, list(variants), "forget_remind_restore"),
                                                    f"- Chosen on calibration: {picked}." if picked else "", code_line(cells)]))
            png = None if a.no_doc else heatmap(cells, list(variants), os.path.join(os.path.dirname(a.doc), "figures", f"{task}-subgroups.png"),
                                                f"{task}: subgroup accuracy")
            if png:
                text += f"\n\n![{task} per-subgroup accuracy](figures/{os.path.basename(png)})"
        sections.append(text)
        print(text, flush=True)
    if not a.no_doc:
        write_doc(a.doc, a.marker or a.suite, f"```bash\n{command}\n```\n\n" + "\n\n".join(sections))


if __name__ == "__main__":
    main()
