"""Noise, then distill (UNDO, arXiv 2506.06278) an unlearned CLIP: does forgetting then survive relearning?

An exploration for issue 14, not a stage of the method. The unlearned model is the teacher; the student is a copy
whose vision tower is shrunk toward a fresh random initialisation, ``(1 - alpha) * unlearned + alpha * random``, and
then trained to match the teacher's image embeddings (1 - cos) on every training image of the dataset (less the
forget rows with ``--exclude``: the teacher's embeddings of them still carry the subgroup). The text tower is the
teacher's, frozen. What the teacher no longer shows (the forgotten subgroup) is not distilled back,
so the latent ability that a relearning attack revives should be gone with the noise.

    python benchmarks/noise_distill.py --model OUT --dataset DATA --output_dir DIR --alpha 0.5 --steps 1000
    python -m hf_unlearn.audit --model DIR --original ORIG --dataset DATA --forget SPEC [--reference_model REF]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def vision_parameters(model):
    return {n: p for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_projection."))}


def main():
    from transformers import AutoProcessor, CLIPModel, get_cosine_schedule_with_warmup

    from hf_unlearn import precision
    from hf_unlearn.family import NO_REMOTE_CODE
    from hf_unlearn.data import ImageSet, load_image_dataset, preprocess
    from hf_unlearn.evaluation import embed_images
    from hf_unlearn.prompts import encode_images
    from hf_unlearn.run import device, set_cpu_threads

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="The unlearned model (the teacher).")
    p.add_argument("--dataset", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--class_column", default="label")
    p.add_argument("--train_split", default="train")
    p.add_argument("--alpha", type=float, default=0.5, help="Weight of the random initialisation in the student's start.")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None,
                   help="A regular expression: only vision parameters whose names match are noised and trained (default: all).")
    p.add_argument("--exclude", default=None,
                   help="A subgroup spec (the forget spec) whose training rows are left out of the distillation data, so "
                        "the teacher's embeddings of the forgotten images, which still carry them, are not copied back.")
    a = p.parse_args()
    set_cpu_threads(None)
    torch.manual_seed(a.seed)
    dev = device()
    precision.set_default(precision.use_bf16("auto", dev))

    teacher = CLIPModel.from_pretrained(a.model, attn_implementation=precision.attn_implementation(dev), **NO_REMOTE_CODE).to(dev).eval()
    processor = AutoProcessor.from_pretrained(a.model)
    train = load_image_dataset(a.dataset)[a.train_split]
    if a.exclude:
        from hf_unlearn.spec import SubgroupSpec

        train = train.select(np.flatnonzero(~SubgroupSpec.parse(a.exclude).mask(train)))
    images = ImageSet.from_dataset(preprocess(train, processor.image_processor, [a.class_column], a.train_split), a.class_column)
    t0 = time.time()
    targets = embed_images(teacher, images.pixel_values).to(dev)  # the teacher's embeddings, once

    student = copy.deepcopy(teacher)
    fresh = CLIPModel(teacher.config).to(dev)  # the architecture's own initialisation
    student.requires_grad_(False)
    with torch.no_grad():
        fresh_params = vision_parameters(fresh)
        for name, param in vision_parameters(student).items():
            if a.only and not re.search(a.only, name):
                continue
            param.mul_(1 - a.alpha).add_(fresh_params[name], alpha=a.alpha)
            param.requires_grad_(True)
    del fresh
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=a.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, a.steps // 20), a.steps)
    g = torch.Generator().manual_seed(a.seed)
    order, losses = torch.empty(0, dtype=torch.long), []
    for step in range(a.steps):
        if len(order) < a.batch:
            order = torch.cat([order, torch.randperm(len(images), generator=g)])
        idx, order = order[: a.batch], order[a.batch :]
        with precision.autocast(dev):
            s = encode_images(student, images.pixel_values[idx].to(dev))
        loss = (1 - (s * targets[idx]).sum(-1)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if step % max(1, a.steps // 10) == 0 or step == a.steps - 1:
            print(f"step {step}: distill loss {sum(losses[-20:]) / len(losses[-20:]):.4f}", flush=True)
    student.eval()
    os.makedirs(a.output_dir, exist_ok=True)
    student.save_pretrained(a.output_dir)
    processor.save_pretrained(a.output_dir)
    record = {"alpha": a.alpha, "exclude": a.exclude, "only": a.only, "steps": a.steps, "batch": a.batch, "learning_rate": a.learning_rate, "images": len(images),
              "final_loss": sum(losses[-20:]) / len(losses[-20:]), "seconds": time.time() - t0, "teacher": a.model}
    with open(os.path.join(a.output_dir, "noise_distill.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(record))
    assert math.isfinite(record["final_loss"])


if __name__ == "__main__":
    main()
