"""How a run's cost and forgetting grow with the forget set: CIFAR-10 automobile (retain truck) at 16 .. 4,000 images.

    python benchmarks/cost_growth.py --out runs/cost_growth            # 16, 100, 1000, 4000 forget images
    python benchmarks/cost_growth.py --sizes 16,100 --out runs/quick

Each size is one run of the recipe in its own process, with default flags but ``--max_forget N`` (``all``: no cap),
PACS and Imagenette as zero-shot sets and ``--no_audit`` (the audit's cost does not depend on the forget set's size
but on the attack settings). The runs share one ``HF_UNLEARN_CACHE``, as a user's would: the first pays for the
original's held-out predictions, later ones reuse them (``eval_original_s`` says so). Prints a markdown table and
writes ``cost_growth.png`` (time and FA against forget images) next to the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "datasets")


def run_size(size: str, out: str) -> dict:
    folder = os.path.join(out, f"forget-{size}")
    report = os.path.join(folder, "unlearning_report.json")
    if not os.path.exists(report):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", os.path.join(ROOT, "recipes", "forget_remind_restore.py"),
               "--model_name_or_path", os.path.join(ROOT, "..", "shared", "models", "mini-clip-64"), "--dataset", os.path.join(SHARED, "cifar10"),
               "--forget", "label=automobile", "--retain", "label=truck",
               "--zeroshot_datasets", f"{os.path.join(SHARED, 'pacs')},{os.path.join(SHARED, 'imagenette')}",
               "--output_dir", folder, "--overwrite_output_dir", "--no_audit", "--allow_incomplete_forgetting"]
        if size != "all":
            cmd += ["--max_forget", size]
        with open(os.path.join(out, f"forget-{size}.log"), "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    with open(report) as f:
        r = json.load(f)
    forget_stage = r["stages"]["forget"]
    return {"size": size, "forget images": r["splits"]["forget"], "forget steps": forget_stage["steps"], "remind steps": r["stages"].get("remind", {}).get("steps", 0),
            **{k: r["timings_s"].get(k, 0.0) for k in ("total_s", "eval_original_s", "forget_s", "remind_s", "restore_s", "eval_final_s")},
            "FA": r["metrics"]["unlearned"]["FA"], "RA": r["fractions"]["RA"], "OA": r["fractions"]["OA"], "ZS": r["fractions"].get("ZS"),
            "composite": r["composite_score"], "forgotten": r["forgetting_achieved"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="16,100,1000,4000")
    p.add_argument("--out", default=os.path.join("runs", "cost_growth"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = [run_size(s, a.out) for s in a.sizes.split(",")]
    print("| forget images | forget steps | remind steps | total s | forget s | remind s | eval original s | eval final s | FA | RA | OA | ZS | composite |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['forget images']} | {r['forget steps']} | {r['remind steps']} | {r['total_s']:.0f} | {r['forget_s']:.0f} | {r['remind_s']:.0f} | "
              f"{r['eval_original_s']:.0f} | {r['eval_final_s']:.0f} | {r['FA']:.1%} | {r['RA']:.3f} | {r['OA']:.3f} | {r['ZS']:.3f} | {r['composite']:.3f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["forget images"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(n, [r["total_s"] for r in rows], "o-", label="total s")
    ax.plot(n, [r["forget_s"] + r["remind_s"] for r in rows], "s--", label="forget + remind s")
    ax.set_xscale("log")
    ax.set_xlabel("forget images (CIFAR-10 automobile)")
    ax.set_ylabel("seconds")
    fa = ax.twinx()
    fa.plot(n, [100 * r["FA"] for r in rows], "^:", color="tab:red", label="FA %")
    fa.set_ylabel("test FA %")
    fig.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "cost_growth.png"), dpi=120)
    with open(os.path.join(a.out, "cost_growth.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
