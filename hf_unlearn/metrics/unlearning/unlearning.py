"""The unlearning metrics as an ``evaluate`` module: accuracy per data group (FA / RA / OA / ZS), and, given the
original model's figures, the retention fractions and the composite score.

    import evaluate, hf_unlearn.evaluation as ev
    metric = evaluate.load(ev.METRIC_PATH)     # offline: the module ships inside the package
    metric.compute(predictions=[...], references=[...], groups=["forget", "retain", "other", "ZS/cifar10", ...],
                   original={"FA": 0.53, "RA": 0.64, ...})
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Zero-shot accuracy per group of an unlearning evaluation. Rows of group 'forget' give FA (lower is
better), 'retain' RA (the forget class's sibling subgroups), 'other' OA (the other classes); any other group name
(e.g. 'ZS/cifar10', a held-out dataset) is reported under its own name. With ``original`` (the same figures of the
model before unlearning), also each retention fraction and the composite score (harmonic mean of forgetting and
the RA / OA / mean-ZS retention fractions)."""

_KWARGS = """
Args:
    predictions: predicted class index per image.
    references: true class index per image.
    groups: the group of each image ('forget', 'retain', 'other', or a held-out set's name such as 'ZS/cifar10').
    original: optional dict of the original model's figures, for 'fractions' and 'composite_score'.
Returns:
    FA, RA, OA and one accuracy per other group present; with ``original`` also 'fractions' and 'composite_score'.
"""

NAMES = {"forget": "FA", "retain": "RA", "other": "OA"}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Unlearning(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64"),
                                        "groups": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, groups, original=None):
        correct = np.asarray(predictions) == np.asarray(references)
        groups = np.asarray(groups)
        present = list(dict.fromkeys(groups.tolist()))  # FA, RA, OA first, then held-out sets in order
        present = [g for g in NAMES if g in present] + [g for g in present if g not in NAMES]
        out = {NAMES.get(g, g): float(correct[groups == g].mean()) for g in present}
        if original is not None:
            from hf_unlearn.evaluation import composite_score, retention_fractions

            out["fractions"] = retention_fractions(out, original)
            out["composite_score"] = composite_score(out, original)
        return out
