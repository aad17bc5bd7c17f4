"""What calibration saw at each step of kept runs: after every stage, along the restore curve, and what test got.

    python benchmarks/calibration_trace.py runs/invest/invest/cifar-red-automobile/*/s0/model

Takes run folders (``--output_dir`` of ``hf_unlearn`` or a benchmark cell kept with ``--keep-models``) or their
``unlearning_report.json``; prints one markdown row per run. Use it to read why a run chose what it chose (does
the remind stage give forgetting back? does the restore step back?) from calibration figures, which is what
defaults may be chosen on; the test columns are there to report, not to choose.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hf_unlearn.evaluation import composite_score  # noqa: E402

REPORT = "unlearning_report.json"


def _fmt(m: dict) -> str:
    return " / ".join(f"{m[k]:.3f}" if k in m else "-" for k in ("FA", "RA", "OA"))


def trace_row(name: str, report: dict) -> str:
    """``| run | <stage> calib FA / RA / OA ... | alpha (calib FA) | test FA | composite |`` for one report."""
    stages = []
    original = report["restore"].get("original_calibration")  # absent in reports written before it was recorded
    for stage, info in report["stages"].items():
        calib = {k.split("/", 1)[1]: v for k, v in (info.get("calibration") or {}).items()}
        score = f" ({composite_score(calib, original):.3f})" if original and "FA" in calib else ""
        stages.append(f"{stage} {_fmt(calib)}{score}")
    restore = report["restore"]
    at = next((p for p in restore["curve"] if abs(p["alpha"] - restore["alpha"]) < 1e-9), {})
    alpha = f"{restore['alpha']:.2f}" + (f" ({at['FA']:.3f})" if "FA" in at else "")
    fa = report["metrics"]["unlearned"]["FA"]
    return f"| {name} | {'; '.join(stages)} | {alpha} | {fa:.1%} | {report['composite_score']:.3f} |"


HEADER = ("| run | calibration FA / RA / OA (composite) after each stage | restore alpha (its calibration FA) | test FA | test composite |\n"
          "|---|---|---|---|---|")


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders or unlearning_report.json files")
    a = p.parse_args(argv)
    rows = []
    for path in a.runs:
        file = os.path.join(path, REPORT) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise SystemExit(f"{path}: no {REPORT} (is it an hf_unlearn output folder, or a cell kept with --keep-models?)")
        with open(file) as f:
            report = json.load(f)
        # name a benchmark cell task/variant/seed; any other run by its folder
        parts = os.path.normpath(os.path.dirname(os.path.abspath(file))).split(os.sep)
        name = "/".join(parts[-4:-1]) if parts[-1] == "model" else parts[-1]
        rows.append(trace_row(name, report))
    text = HEADER + "\n" + "\n".join(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
