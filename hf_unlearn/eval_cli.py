"""Independent evaluation of an unlearned model against its original, on held-out data with held-out prompts.

    python -m hf_unlearn.eval_cli --model runs/pacs-sketch-dog --original ../shared/models/mini-clip-64 \\
        --dataset ../shared/datasets/pacs --forget "label=dog,domain=sketch" \\
        --zeroshot_datasets ../shared/datasets/cifar10,../shared/datasets/imagenette

Uses only the eval split and ``prompts.EVAL_TEMPLATES`` (or ``--eval_templates``), never the training phrasings,
in float32 unless ``--precision`` says otherwise. Prints the FA / RA / OA / ZS table and whether retention held
(``--retention_bars``, a run's bars by default), and writes JSON if asked. The original's predictions are kept across
calls and runs (``$HF_UNLEARN_CACHE``), keyed by its weights' bytes, the data, the templates and the precision; the
original model is loaded only when they are not there.
"""
from __future__ import annotations

from .checks import parse_dataclasses, parse_retention_bars
from .cli import one_line_errors
from .config import DatasetArguments, DeviceArguments, ModelPairArguments, RetentionBars, split_list
from .outputs import write_json
from .spec import SpecError

# torch, transformers' models and datasets are imported inside the functions, after the flags are parsed and checked:
# a bad flag's line comes in about a second, and a Ctrl-C while they load is one_line_errors' line, not a traceback.


def evaluate_pair(model: str, original: str, data: DatasetArguments, bf16: bool = False, retention_bars: str = RetentionBars.retention_bars) -> dict:
    """The two models' FA / RA / OA / ZS on the same held-out sets, the fractions, the composite score and the
    retention check against ``retention_bars`` (a run's default unless given)."""
    from . import precision
    from .evaluation import composite_score, evaluate_sets, predict, retention_check, retention_fractions, score_sets
    from .family import load_clip, load_model, load_processor
    from .groups import load_checked, plan_eval, prepare_eval_sets
    from .prompts import EVAL_TEMPLATES
    from .run import device, original_predictions

    if not data.forget:
        raise SpecError("no forget spec; pass --forget 'column=value[,column=value...]', the subgroup the model was made to forget")
    precision.set_default(bf16)
    attn = precision.attn_implementation(device())
    templates = tuple(split_list(data.eval_templates, "|")) or EVAL_TEMPLATES
    processor = load_processor(original)
    plan = plan_eval(data, load_checked(data, splits=(data.eval_split,)))
    sets = prepare_eval_sets(data, processor, plan)

    def predict_original():  # only when the runs' cache (same checkpoint bytes, data, templates, precision) has no entry
        original_model = load_model(original, attn)  # its processor is the one loaded above
        return [predict(original_model, processor.tokenizer, s, templates).tolist() for s in sets]

    before = score_sets(sets, original_predictions(original, data.class_column, plan, templates, predict_original))
    new_model, new_processor = load_clip(model, attn)
    after = evaluate_sets(new_model, new_processor.tokenizer, sets, templates)
    fractions = retention_fractions(after, before)
    return {"original": before, "unlearned": after, "fractions": fractions, "composite_score": composite_score(after, before),
            "retention": retention_check(fractions, parse_retention_bars(retention_bars))}


def main(argv=None) -> dict:
    from transformers import HfArgumentParser

    parser = HfArgumentParser([ModelPairArguments, DatasetArguments, RetentionBars, DeviceArguments], prog="python -m hf_unlearn.eval_cli",
                              description=__doc__.split("\n")[0])
    parser.set_defaults(precision="fp32")
    models, data, bars, compute = parse_dataclasses(parser, argv)
    from . import precision
    from .report import metrics_table, retention_outcome
    from .run import device, set_cpu_threads

    set_cpu_threads(compute.cpu_threads)
    result = evaluate_pair(models.model, models.original, data, precision.use_bf16(compute.precision, device()), bars.retention_bars)
    print("\n".join([*metrics_table(result, result["composite_score"]), retention_outcome(result)]))
    if models.json:
        write_json(models.json, result)
    return result


if __name__ == "__main__":
    one_line_errors(main)
