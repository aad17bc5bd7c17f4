"""The unlearning metrics as an ``evaluate`` module, loaded offline from the package."""
import evaluate
import pytest

from hf_unlearn.checks import parse_retention_bars
from hf_unlearn.evaluation import METRIC_PATH, composite_score, retention_check


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


def test_retention_check_holds_each_fraction_to_its_own_bar():
    bars = parse_retention_bars("RA=0.98, OA=0.99,ZS=0.99")
    assert bars == {"RA": 0.98, "OA": 0.99, "ZS": 0.99}
    kept = retention_check({"forgetting": 1.0, "RA": 0.98, "OA": 1.2, "ZS/cifar10": 0.995, "ZS": 0.995}, bars)
    assert kept["kept"] and kept["missed"] == {}  # at the bar is kept
    assert set(kept["checked"]) == {"RA", "OA", "ZS/cifar10"}  # forgetting is not retention; "ZS" is the sets' mean
    # a gain on the retain set or on one zero-shot set does not hide a loss on another
    lost = retention_check({"RA": 1.3, "OA": 0.96, "ZS/cifar10": 0.90, "ZS/imagenette": 1.01, "ZS": 0.955}, bars)
    assert not lost["kept"] and set(lost["missed"]) == {"OA", "ZS/cifar10"}
    assert retention_check({"OA": 0.5}, parse_retention_bars("RA=0.98"))["kept"]  # only the bars given are checked
    for bad in ("FA=0.5", "OA=high", "OA=1.5"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            parse_retention_bars(bad)
