"""Every baseline runs through the same pipeline (--method), on the same data and step budget."""
import json
import logging

import pytest
import torch
from transformers import CLIPModel

from hf_unlearn.cli import main
from hf_unlearn.evaluation import composite_score
from hf_unlearn.methods import METHODS
from hf_unlearn.selection import weight_rms
from tests.helpers import base_args


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_baseline_runs_through_the_recipe(world, tmp_path, method, caplog):
    out = tmp_path / method
    with caplog.at_level(logging.WARNING, logger="hf_unlearn"):
        report = main(base_args(world, out, "--method", method, "--no_lora"))  # a setting of the method: named, not silently dropped
    assert any(r.getMessage().startswith(f"--method {method} does not read") and "--no_lora" in r.getMessage() for r in caplog.records)
    saved = json.load(open(out / "unlearning_report.json"))
    assert saved["method"] == method and list(saved["stages"]) == [method]
    assert saved["restore"]["alpha"] == 1.0  # baselines have no restore step
    hp = saved["hyperparameters"]
    assert hp["chosen"]["learning_rate"] == METHODS[method].learning_rates[-1] and hp["search"] is None
    # the same optimiser-step budget as forget_remind_restore with these settings
    assert saved["stages"][method]["steps"] == hp["budget_steps"]
    CLIPModel.from_pretrained(out)
    assert report["composite_score"] == saved["composite_score"]


def test_search_scores_on_calibration_and_trains_the_best(world, tmp_path):
    out = tmp_path / "rl"
    main(base_args(world, out, "--method", "rl", "--hp_search", "--hp_search_fraction", "0.5"))
    hp = json.load(open(out / "unlearning_report.json"))["hyperparameters"]
    grid = hp["search"]["grid"]
    assert len(grid) == len(METHODS["rl"].grid()) == 4
    assert all({"FA", "RA", "composite"} <= set(row) for row in grid)
    best = max(grid, key=lambda r: r["composite"])
    assert hp["chosen"] == {"learning_rate": best["learning_rate"], "forget_weight": best["forget_weight"]}
    assert hp["search"]["steps"] == max(1, round(hp["budget_steps"] * 0.5))


def test_our_method_searches_the_forget_stage(world, tmp_path, caplog):
    out = tmp_path / "ours"
    with caplog.at_level(logging.WARNING, logger="hf_unlearn"):
        main(base_args(world, out, "--hp_search", "--baseline_weight", "0.5"))
    assert any("does not read --baseline_weight: they set the baselines" in r.getMessage() for r in caplog.records)
    saved = json.load(open(out / "unlearning_report.json"))
    assert len(saved["hyperparameters"]["search"]["grid"]) == 4
    assert saved["arguments"]["forget_learning_rate"] == saved["hyperparameters"]["chosen"]["learning_rate"]
    assert set(saved["stages"]) == {"forget", "remind"}
    # the report keeps the original's calibration figures the search scored against
    original = saved["restore"]["original_calibration"]
    assert all(row["composite"] == pytest.approx(composite_score(row, original)) for row in saved["hyperparameters"]["search"]["grid"])


def test_a_relative_forget_rate_scales_with_the_tuned_weights(world, tmp_path):
    out = tmp_path / "relative"
    main(base_args(world, out, "--forget_relative_learning_rate", "0.05"))
    saved = json.load(open(out / "unlearning_report.json"))
    chosen = saved["hyperparameters"]["chosen"]
    original = CLIPModel.from_pretrained(world[0])
    rms = weight_rms(original, saved["selected_modules"])
    assert chosen["weight_rms"] == pytest.approx(rms) and chosen["relative_learning_rate"] == 0.05
    assert chosen["learning_rate"] == pytest.approx(0.05 * rms) == saved["arguments"]["forget_learning_rate"]
    forget = json.load(open(out / "stages" / "forget" / "stage_complete.json"))
    assert forget["settings"]["learning_rate"] == pytest.approx(0.05 * rms)
    # the size it scales by: weights twice as large, twice the RMS
    with torch.no_grad():
        for p in original.parameters():
            p.mul_(2)
    assert weight_rms(original, saved["selected_modules"]) == pytest.approx(2 * rms)


def test_our_search_can_score_forget_then_remind(world, tmp_path):
    out = tmp_path / "ours"
    main(base_args(world, out, "--hp_search", "--hp_search_remind", "--hp_search_fraction", "1.0"))
    search = json.load(open(out / "unlearning_report.json"))["hyperparameters"]["search"]
    stages = out / "stages" / "search"
    assert search["steps"] >= 2
    for i, row in enumerate(search["grid"]):
        forget = json.load(open(stages / str(i) / "stage_complete.json"))
        remind = json.load(open(stages / f"{i}-remind" / "stage_complete.json"))
        # the candidate's steps are split between the stages, and it is scored after reminding
        assert forget["steps"] >= 1 and remind["steps"] >= 1 and forget["steps"] + remind["steps"] == search["steps"]
        assert row["FA"] == remind["calibration"]["calibration/FA"] and row["RA"] == remind["calibration"]["calibration/RA"]


def test_unknown_method_is_refused_before_anything_runs(world, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        main(base_args(world, tmp_path / "x", "--method", "nope"))
