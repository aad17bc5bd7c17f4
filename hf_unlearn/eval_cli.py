"""Independent evaluation of an unlearned model against its original, on held-out data with held-out prompts.

    python -m hf_unlearn.eval_cli --model runs/pacs-sketch-dog --original ../shared/models/mini-clip-64 \
        --dataset ../shared/datasets/pacs --forget "label=dog,domain=sketch" \
        --zeroshot_datasets ../shared/datasets/cifar10,../shared/datasets/imagenette

Uses only the test split and ``prompts.EVAL_TEMPLATES`` (or ``--eval_templates``), never the training phrasings,
in float32 unless ``--precision`` says otherwise. Prints the FA / RA / OA / ZS table and writes JSON if asked.
"""
from __future__ import annotations

import argparse
import json

import torch

from . import precision
from .config import UnlearnArguments, _split_list
from .evaluation import composite_score, evaluate_sets, retention_fractions
from .pipeline import load_clip, prepare_eval_sets
from .prompts import EVAL_TEMPLATES


def evaluate_pair(model: str, original: str, args: UnlearnArguments, templates=EVAL_TEMPLATES) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision.set_default(precision.resolve(args.precision, device))
    attn = precision.attn_implementation(device)
    orig_model, processor = load_clip(original, attn)
    sets = prepare_eval_sets(args, processor)
    before = evaluate_sets(orig_model, processor.tokenizer, sets, templates)
    del orig_model
    new_model, new_processor = load_clip(model, attn)
    after = evaluate_sets(new_model, new_processor.tokenizer, sets, templates)
    return {"original": before, "unlearned": after, "fractions": retention_fractions(after, before), "composite_score": composite_score(after, before)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--original", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--forget", required=True)
    p.add_argument("--retain", default=None)
    p.add_argument("--class_column", default="label")
    p.add_argument("--zeroshot_datasets", default=None)
    p.add_argument("--eval_split", default="test")
    p.add_argument("--eval_templates", default=None, help="'|'-separated templates; default prompts.EVAL_TEMPLATES")
    p.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"])
    p.add_argument("--json", default=None, help="write the figures here")
    a = p.parse_args(argv)
    args = UnlearnArguments(dataset=a.dataset, forget=a.forget, retain=a.retain, class_column=a.class_column,
                            zeroshot_datasets=a.zeroshot_datasets, eval_split=a.eval_split, precision=a.precision)
    templates = tuple(_split_list(a.eval_templates, "|")) or EVAL_TEMPLATES
    result = evaluate_pair(a.model, a.original, args, templates)
    print(f"{'metric':<16}{'original':>10}{'unlearned':>11}{'fraction':>10}")
    for k, v in result["original"].items():
        u = result["unlearned"][k]
        print(f"{k:<16}{v:>10.2%}{u:>11.2%}{(u / v if v else float('nan')):>10.3f}")
    print(f"composite score {result['composite_score']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
