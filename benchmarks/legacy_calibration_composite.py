"""Calibration composites of kept runs whose reports predate ``restore.original_calibration``.

    python benchmarks/legacy_calibration_composite.py runs/benchmarks/methods/cifar-red-automobile/forget_remind_restore/s0/cell.json \
        runs/invest/invest/cifar-red-automobile/{base,guard3}/s0/model

Such reports hold the run's calibration FA / RA / OA but not the original model's, which the composite needs. They
are recovered exactly from data the runs did record, for the same task and seed (hence the same calibration split):
the restore curve's ``retention`` is the mean of RA/RA0 and OA/OA0, so two curve points give RA0 and OA0; a search
row of a seed-0 methods cell holds a calibration composite, which then gives FA0. New reports record the original's
figures; use ``calibration_trace.py`` on them.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
from scipy.optimize import brentq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hf_unlearn.evaluation import composite_score  # noqa: E402


def original_calibration(report: dict, search_row: dict) -> dict:
    curve = report["restore"]["curve"]
    a, b = curve[0], curve[-1]
    inv_ra, inv_oa = np.linalg.solve([[a["RA"], a["OA"]], [b["RA"], b["OA"]]], [2 * a["retention"], 2 * b["retention"]])
    ra0, oa0 = 1 / inv_ra, 1 / inv_oa
    fa0 = brentq(lambda f: composite_score(search_row, {"FA": f, "RA": ra0, "OA": oa0}) - search_row["composite"], search_row["FA"] + 1e-6, 1.0)
    return {"FA": fa0, "RA": ra0, "OA": oa0}


def main(argv=None) -> None:
    argv = argv or sys.argv[1:]
    row = json.load(open(argv[0]))["hyperparameters"]["search"]["grid"][0]
    reports = {path: json.load(open(os.path.join(path, "unlearning_report.json"))) for path in argv[1:]}
    original = original_calibration(next(iter(reports.values())), row)
    print("original calibration:", " / ".join(f"{k} {v:.3f}" for k, v in original.items()))
    for path, report in reports.items():
        at = next(p for p in report["restore"]["curve"] if abs(p["alpha"] - report["restore"]["alpha"]) < 1e-9)
        print(f"{path}: calibration FA / RA / OA {at['FA']:.3f} / {at['RA']:.3f} / {at['OA']:.3f} at alpha {at['alpha']:.2f}, "
              f"composite {composite_score(at, original):.4f}")


if __name__ == "__main__":
    main()
