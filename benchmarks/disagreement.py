"""Which held-out images two models of the same subgroup disagree on, and how close each is to the decision boundary.

    python benchmarks/disagreement.py --a runs/before --b runs/after --dataset ../shared/datasets/pacs \\
        --forget label=dog,domain=sketch [--group retain] [--original ../shared/models/mini-clip-64]

A one-image difference in RA or OA between two runs is either a change the method makes to a group of images or
churn near the boundary between two fine-tunes; this prints which: how many images each model alone gets right, and
each disagreement's margin (true-class cosine minus the best other class's, under the report's templates), in fp32.
"""
import argparse

import torch

from hf_unlearn.config import DatasetArguments
from hf_unlearn.evaluation import embed_images
from hf_unlearn.family import load_clip, load_processor
from hf_unlearn.groups import load_checked, plan_eval, prepare_eval_sets
from hf_unlearn.prompts import EVAL_TEMPLATES, class_text_embeddings


@torch.no_grad()
def margins(model_path: str, processor, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> torch.Tensor:
    model = load_clip(model_path)[0].eval()
    logits = embed_images(model, images) @ class_text_embeddings(model, processor.tokenizer, class_names, EVAL_TEMPLATES).cpu().t()
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return logits.gather(1, labels[:, None]).squeeze(1) - others.max(1).values  # > 0: right


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="one model folder")
    p.add_argument("--b", required=True, help="the other")
    p.add_argument("--dataset", required=True)
    p.add_argument("--forget", required=True)
    p.add_argument("--group", default="retain", choices=("forget", "retain", "other"))
    p.add_argument("--original", default=None, help="whose processor prepares the images (default: --a's)")
    a = p.parse_args()
    data = DatasetArguments(dataset=a.dataset, forget=a.forget)
    processor = load_processor(a.original or a.a)
    test = prepare_eval_sets(data, processor, plan_eval(data, load_checked(data, splits=(data.eval_split,))))[0]
    mask = test.masks[a.group]
    images, labels = test.images.pixel_values[mask], test.images.labels[mask]
    m = {name: margins(path, processor, images, labels, test.class_names) for name, path in (("a", a.a), ("b", a.b))}
    right_a, right_b = m["a"] > 0, m["b"] > 0
    print(f"{a.group}: {len(labels)} images; right: a {int(right_a.sum())}, b {int(right_b.sum())}; "
          f"right only in a {int((right_a & ~right_b).sum())}, only in b {int((right_b & ~right_a).sum())}")
    for i in (right_a != right_b).nonzero().flatten().tolist():
        print(f"  image {i} ({test.class_names[labels[i]]}): margin a {m['a'][i]:+.4f}, b {m['b'][i]:+.4f}")


if __name__ == "__main__":
    main()
