"""The unlearning metrics as an ``evaluate`` module, loaded offline from the package."""
import evaluate
import pytest

from hf_unlearn.evaluation import METRIC_PATH, composite_score


def test_the_metric_loads_offline_and_scores_each_group():
    metric = evaluate.load(METRIC_PATH)
    out = metric.compute(predictions=[0, 1, 1, 2, 2, 0, 3], references=[0, 0, 1, 2, 1, 0, 3],
                         groups=["forget", "forget", "retain", "retain", "other", "other", "ZS/x"])
    assert out == {"FA": 0.5, "RA": 1.0, "OA": 0.5, "ZS/x": 1.0}
    assert list(metric.compute(predictions=[0, 0, 0], references=[0, 0, 0], groups=["ZS/x", "other", "forget"])) == ["FA", "OA", "ZS/x"]
    original = {"FA": 1.0, "RA": 1.0, "OA": 1.0, "ZS/x": 1.0}
    scored = metric.compute(predictions=[0, 1], references=[1, 1], groups=["forget", "retain"], original=original)
    assert scored["FA"] == 0.0 and scored["fractions"]["forgetting"] == 1.0
    assert scored["composite_score"] == pytest.approx(composite_score({"FA": 0.0, "RA": 1.0}, original)) == 1.0
    worse = metric.compute(predictions=[1, 0], references=[1, 1], groups=["forget", "retain"], original=original)
    assert worse["composite_score"] == 0.0  # nothing forgotten and nothing retained
