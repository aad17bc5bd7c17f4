"""Forget several PACS subgroups with the default settings; evaluate each independently in float32.

    python benchmarks/pacs_subgroups.py [--specs "label=dog,domain=sketch;label=person,domain=art_painting"] [--seed 0] [recipe flags]

Resumable: a finished run folder (runs/bench/<tag>-s<seed>) is not recomputed. Prints a markdown table
(paste into docs/BENCHMARKS.md) with FA / RA / OA / ZS from ``hf_unlearn.eval_cli`` and the run's wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
EVAL_PRECISION = os.environ.get("EVAL_PRECISION", "auto")  # fp32 for the strictest check; auto agrees to ~0.1 pt
DEFAULT_SPECS = "label=dog,domain=sketch;label=person,domain=art_painting;label=elephant,domain=cartoon"


def run(spec: str, seed: int, extra: list[str]) -> dict:
    tag = spec.replace("label=", "").replace("domain=", "").replace(",", "-")
    out = os.path.join(ROOT, "runs", "bench", f"{tag}-s{seed}")
    zs = f"{SHARED}/datasets/cifar10,{SHARED}/datasets/imagenette"
    if not os.path.exists(os.path.join(out, "unlearning_report.json")):
        start = time.time()
        subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "forget_remind_restore.py"),
                        "--model_name_or_path", f"{SHARED}/models/mini-clip-64", "--dataset", f"{SHARED}/datasets/pacs",
                        "--forget", spec, "--zeroshot_datasets", zs, "--output_dir", out, "--seed", str(seed), *extra], check=True)
        with open(os.path.join(out, "wall_time.json"), "w") as f:
            json.dump({"wall_s": time.time() - start}, f)
    ev = os.path.join(out, f"eval_{EVAL_PRECISION}.json")
    if not os.path.exists(ev):
        subprocess.run([sys.executable, "-m", "hf_unlearn.eval_cli", "--model", out, "--original", f"{SHARED}/models/mini-clip-64",
                        "--dataset", f"{SHARED}/datasets/pacs", "--forget", spec, "--zeroshot_datasets", zs, "--json", ev, "--precision", EVAL_PRECISION], check=True, cwd=ROOT)
    result = json.load(open(ev))
    result["wall_s"] = json.load(open(os.path.join(out, "wall_time.json")))["wall_s"]
    result["alpha"] = json.load(open(os.path.join(out, "unlearning_report.json")))["restore"]["alpha"]
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--specs", default=DEFAULT_SPECS)
    p.add_argument("--seed", type=int, default=0)
    a, extra = p.parse_known_args()
    rows = []
    for spec in a.specs.split(";"):
        r = run(spec, a.seed, extra)
        o, u = r["original"], r["unlearned"]
        rows.append(f"| `{spec}` | {o['FA']:.1%} -> **{u['FA']:.1%}** | {o['RA']:.1%} -> {u['RA']:.1%} ({u['RA']/o['RA']:.3f}) "
                    f"| {o['OA']:.1%} -> {u['OA']:.1%} ({u['OA']/o['OA']:.3f}) | {u['ZS/cifar10']/o['ZS/cifar10']:.3f} "
                    f"| {u['ZS/imagenette']/o['ZS/imagenette']:.3f} | {r['composite_score']:.3f} | {r['alpha']:.2f} | {r['wall_s']:.0f} s |")
    print("| forget | FA | RA (fraction) | OA (fraction) | CIFAR-10 ZS fraction | Imagenette ZS fraction | composite | alpha | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
