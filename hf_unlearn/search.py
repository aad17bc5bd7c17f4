"""The searches, both scored on the calibration split carved from the training data, never on test:
the hyperparameter search every method gets, and the restore step's search for the soup weight."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from .checkpointing import stage_calibration
from .evaluation import composite_score
from .progress import progress


def hp_search(run, train: Callable[[str, dict, int], str], grid: list[dict], budget: int) -> dict:
    """Train each setting of ``grid`` for a fraction of the budget (``train(name, setting, steps) -> stage folder``);
    keep the best calibration composite. Ties go to the first (the lowest learning rate)."""
    steps = max(1, round(budget * run.args.hp_search_fraction))
    rows = []
    for i, hp in enumerate(progress(grid, desc="hyperparameter search")):
        folder = train(f"search/{i}", hp, steps)
        calibration = stage_calibration(folder)
        rows.append({**hp, **calibration, "composite": composite_score(calibration, run.original_calibration)})
    best = max(rows, key=lambda r: r["composite"])
    return {"steps": steps, "grid": rows, "chosen": {k: best[k] for k in grid[0]}}


def choose_alpha(curve: list[dict], fa_target: float, tolerance: float = 0.0) -> dict:
    """The calibration rule: among weights whose calibration FA <= target, the one that retains the most
    (mean of RA and OA fractions; ties -> smaller alpha, nearer the original); with ``tolerance`` > 0, the largest
    alpha within ``tolerance`` of that retention (the soup gives back depth, and small gaps are calibration noise).
    If none reaches the target, forgetting is what failed, so no forgetting is traded for retention: the lowest FA,
    ties -> the largest alpha."""
    ok = [p for p in curve if p["FA"] <= fa_target + 1e-12]
    if not ok:
        return min(curve, key=lambda p: (p["FA"], -p["alpha"]))
    best = max(ok, key=lambda p: (round(p["retention"], 9), -p["alpha"]))
    if tolerance <= 0:
        return best
    return max((p for p in ok if p["retention"] >= best["retention"] - tolerance - 1e-12), key=lambda p: p["alpha"])


def search_alpha(evaluate: Callable[[float], dict], alphas: Sequence[float], fa_target: float, original: dict,
                 tolerance: float = 0.0, clip: bool = False) -> tuple[dict, list]:
    """Evaluate each alpha on calibration data (``evaluate(alpha) -> {"FA", "RA", "OA"}``) and apply the rule. With
    ``clip``, each fraction is capped at 1 (as in the composite score), so an RA gain cannot pay for an OA loss."""
    curve = []
    for alpha in progress(alphas, desc="restore search"):
        m = dict(evaluate(alpha))
        fr = [m[k] / original[k] for k in ("RA", "OA") if k in m and original.get(k)]
        fr = [min(f, 1.0) for f in fr] if clip else fr
        m.update(alpha=float(alpha), retention=sum(fr) / len(fr) if fr else 0.0)
        curve.append(m)
    return choose_alpha(curve, fa_target, tolerance), curve
