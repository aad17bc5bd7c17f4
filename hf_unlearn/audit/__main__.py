"""``python -m hf_unlearn.audit``: the robustness audit of an unlearned model on its own.

    python -m hf_unlearn.audit --model runs/pacs-sketch-dog --original ../shared/models/mini-clip-64 \\
        --dataset ../shared/datasets/pacs --forget "label=dog,domain=sketch" [--reference_model REF]

The groups are carved as a run with the same data settings and seed carves them. When ``--model`` holds an
``unlearning_report.json``, its ``audit`` section and the card's "Robustness audit" section are (re)written.
"""
from __future__ import annotations

import dataclasses
import json
import os

from ..checks import parse_dataclasses
from ..cli import one_line_errors
from ..config import AuditArguments, DataArguments, DatasetArguments, DeviceArguments, ModelPairArguments, UnlearnArguments, split_list
from ..outputs import write_json, write_text
from ..spec import SubgroupSpec

# torch, transformers' models and datasets are imported inside the functions, after the flags are parsed and checked,
# as in eval_cli: a bad flag's line comes in about a second, and a Ctrl-C while they load is one line.


def audit_model(models: ModelPairArguments, args: UnlearnArguments) -> dict:
    from .. import precision
    from ..family import load_clip, load_model, weights_folder
    from ..groups import load_checked, prepare_eval_sets, prepare_groups
    from ..prompts import EVAL_TEMPLATES
    from ..run import device, set_cpu_threads
    from .attack_data import prepare_audit_data
    from .runner import run_audit

    set_cpu_threads(args.cpu_threads)
    precision.set_default(precision.use_bf16(args.precision, device()))
    attn = precision.attn_implementation(device())
    original, processor = load_clip(models.original, attn)
    unlearned = load_model(models.model, attn)  # every model is asked through the original's processor
    reference = load_model(args.reference_model, attn) if args.reference_model else None
    groups, plan = prepare_groups(args, processor)
    data = prepare_audit_data(args, processor, groups, prepare_eval_sets(args, processor, plan)[0], load_checked(args)[args.train_split])
    templates = tuple(split_list(args.eval_templates, "|")) or EVAL_TEMPLATES
    folders = {"original": weights_folder(models.original), **({"reference": weights_folder(args.reference_model)} if reference is not None else {})}
    return run_audit(unlearned, original, processor, data, args, templates, reference, weights_folders=folders)


def _other_run(report: dict, models: ModelPairArguments, args: UnlearnArguments) -> str | None:
    """How the folder's own run differs from what this audit attacked (None: the same subgroup, data and original)."""
    from ..groups import same_source

    def same_path(a, b):
        return bool(a and b) and same_source(a, b)

    def spec(text):
        return sorted(SubgroupSpec.parse(text).conditions)

    differs = [f"{what} {mine!r} (its run: {theirs!r})" for what, mine, theirs, same in (
        ("--forget", args.forget, report.get("forget"), spec(args.forget) == spec(report.get("forget") or args.forget)),
        ("--dataset", args.dataset, report.get("dataset"), args.dataset is None or same_path(args.dataset, report.get("dataset"))),
        ("--original", models.original, report.get("model"), same_path(models.original, report.get("model"))),
    ) if not same]
    return "; ".join(differs) or None


def _update_model_folder(folder: str, audit: dict, models: ModelPairArguments, args: UnlearnArguments) -> None:
    """The audit into the folder's report and card, when the folder is a run of the same subgroup, data and original."""
    from ..report import REPORT_NAME, model_card

    path = os.path.join(folder, REPORT_NAME)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        report = json.load(f)
    other = _other_run(report, models, args)
    if other:
        print(f"The audit was not written into {folder!r}: its report is of another run ({other}).")
        return
    report["audit"] = json.loads(json.dumps(audit, default=str))
    write_json(path, report)
    write_text(os.path.join(folder, "README.md"), model_card(report))


def main(argv=None) -> dict:
    from transformers import HfArgumentParser

    from .outcome import verdict_lines

    parser = HfArgumentParser([ModelPairArguments, DatasetArguments, DataArguments, AuditArguments, DeviceArguments], prog="python -m hf_unlearn.audit",
                              description=__doc__.split("\n")[0])
    models, *groups = parse_dataclasses(parser, argv)
    settings = {k: v for g in groups for k, v in dataclasses.asdict(g).items()}
    args = UnlearnArguments(model_name_or_path=models.original, **settings)
    audit = audit_model(models, args)
    print("\n".join(verdict_lines(audit)))
    if os.path.isdir(models.model):
        _update_model_folder(models.model, audit, models, args)
    if models.json:
        write_json(models.json, audit)
    return audit


if __name__ == "__main__":
    one_line_errors(main)
