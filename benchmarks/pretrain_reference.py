"""A CLIP pretrained from scratch on the train splits of labelled datasets, with or without one subgroup: on real data,
the pair (an original, and a reference that never saw the subgroup) against which issue 14's bars can be judged.

    python benchmarks/pretrain_reference.py --output_dir runs/pretrained/all
    python benchmarks/pretrain_reference.py --output_dir runs/pretrained/no-horse-art --without label=horse,domain=art_painting

The architecture, tokenizer and image processor come from ``--config_from`` (its weights are not read), the data from
``--datasets``; captions are built as mini-clip-64's were (``../shared/README.md``): a random template per image and
step, with the class name and the domain word (a ``domain`` column's value, "painting" for PACS's art_painting,
"photo" for datasets without one; CIFAR-10's small photos also "a low resolution photo of a {c}."). The targets of the
contrastive loss are spread over every caption in the batch that is true of an image, as the demo CLIP's pretraining
does. mini-clip-64's budget (2.5 M samples) takes about a day on the 2-core development CPU (30 images a second) and
minutes on a GPU (bf16 autocast on CUDA): run it where the ``device`` tool lends one. The original and the reference
come from the same command and seed, so they differ only by the subgroup.

A run that long must survive an interruption: every ``--save_minutes`` (and ``--save_steps``, if given) the weights,
AdamW's state, the schedule and the sampler's generator are written to ``<output_dir>.incomplete/checkpoint``
(safetensors and JSON, atomically); ``--resume_from_checkpoint`` continues from there to the same weights an
uninterrupted run ends with, and a run without it refuses to overwrite one.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import AutoProcessor, CLIPConfig, CLIPModel, get_cosine_schedule_with_warmup  # noqa: E402

from hf_unlearn.checkpointing import settings_differences  # noqa: E402
from hf_unlearn.data import ImageSet, image_column, load_image_dataset, preprocess  # noqa: E402
from hf_unlearn.demo.pretrain import multi_positive_loss  # noqa: E402
from hf_unlearn.evaluation import EvalSet, evaluate_sets  # noqa: E402
from hf_unlearn.outputs import publish, recover_publish, staging_folder, write_json  # noqa: E402
from hf_unlearn.spec import SubgroupSpec  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
DATASETS = ",".join(os.path.join(SHARED, "datasets", d) for d in ("pacs", "cifar10", "imagenette"))
TEMPLATES = ("a {d} of a {c}.", "a {c} in a {d}.", "a picture of a {c}.", "a {c}.")
LOW_RESOLUTION = "a low resolution {d} of a {c}."  # for images of 32 px or less (CIFAR-10)
DOMAIN_WORDS = {"art_painting": "painting"}
# what decides the weights a run ends with: a checkpoint is resumed only under the same values
TRAINED = ("without", "datasets", "config_from", "samples", "batch_size", "learning_rate", "weight_decay", "seed")


def load_training_images(paths: list[str], processor, without: SubgroupSpec | None):
    """Every train image but ``without``'s rows (in the datasets that have its columns), with its class name and
    domain word: pixels, name ids, domain ids, whether it is low-resolution, the names and words, and rows per dataset."""
    pixels, name_ids, domain_ids, low_res, names, words, rows = [], [], [], [], [], [], {}
    for path in paths:
        ds = load_image_dataset(path)["train"]
        if without is not None and all(c in ds.features for c, _ in without.conditions):
            ds = ds.select(np.flatnonzero(~without.mask(ds)))
        images = ImageSet.from_dataset(preprocess(ds, processor.image_processor, ["label"], "train"), "label")
        class_names = ds.features["label"].names
        domains = ([ds.features["domain"].int2str(int(d)) for d in ds["domain"]] if "domain" in ds.features else ["photo"] * len(ds))
        names += [n for n in class_names if n not in names]  # one id per name: CIFAR-10's dog is PACS's dog
        words += sorted({DOMAIN_WORDS.get(d, d) for d in domains} - set(words))
        pixels.append(images.pixel_values.half())
        name_ids.append(torch.tensor([names.index(class_names[i]) for i in images.labels.tolist()]))
        domain_ids.append(torch.tensor([words.index(DOMAIN_WORDS.get(d, d)) for d in domains]))
        low_res.append(torch.full((len(ds),), min(ds[0][image_column(ds.features)].size) <= 32))
        rows[os.path.basename(os.path.normpath(path))] = len(ds)
    return torch.cat(pixels), torch.cat(name_ids), torch.cat(domain_ids), torch.cat(low_res), names, words, rows


def caption_table(tokenizer, names: list[str], words: list[str], max_length: int):
    """Every caption (name x domain word x template), tokenised once: ids, mask, and the name and word each is true of
    (word -1: true of every domain)."""
    templates = (*TEMPLATES, LOW_RESOLUTION)
    keys = [(n, w, t) for n in range(len(names)) for w in range(len(words)) for t in range(len(templates))]
    texts = [templates[t].format(c=names[n], d=words[w]) for n, w, t in keys]
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    key = torch.tensor(keys)
    word = torch.where(torch.tensor(["{d}" in templates[t] for _, _, t in keys]), key[:, 1], -1)
    shape = (len(names), len(words), len(templates))
    return tokens["input_ids"].view(*shape, -1), tokens["attention_mask"].view(*shape, -1), word.view(shape)


def contrastive_loss(model, pixels, name, word, ids, mask, cap_name, cap_word) -> torch.Tensor:
    """CLIP's loss with the targets spread over every caption in the batch that is true of an image (the demo CLIP's)."""
    width = int(mask.sum(1).max())
    logits = model(input_ids=ids[:, :width], attention_mask=mask[:, :width], pixel_values=pixels).logits_per_image.float()
    match = ((name[:, None] == cap_name[None, :]) & ((cap_word[None, :] < 0) | (cap_word[None, :] == word[:, None]))).float()
    return multi_positive_loss(logits, match)


def save_checkpoint(folder: str, step: int, seconds: float, settings: dict, model, opt, sched, generator) -> None:
    """Everything the loop needs to go on from ``step``, written atomically: a checkpoint is whole or absent."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_model(model, os.path.join(tmp, "model.safetensors"))
    state = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, moments in state["state"].items() for k, v in moments.items()}
    save_file({**tensors, "generator": generator.get_state()}, os.path.join(tmp, "optimizer.safetensors"))
    write_json(os.path.join(tmp, "trainer_state.json"), {"step": step, "seconds": seconds, "settings": settings,
                                                          "param_groups": state["param_groups"], "scheduler": sched.state_dict()})
    publish(tmp, folder, overwrite=True)  # the old checkpoint is removed only once the new one is in place


def checkpoint_to_resume(folder: str, settings: dict, resume: bool) -> dict | None:
    """The record of the checkpoint to go on from (None: start from scratch), checked before any data is loaded: a
    checkpoint is never overwritten unasked, nor resumed under other ``settings``."""
    recover_publish(folder)  # killed while replacing the last checkpoint: it is put back
    if not os.path.isdir(folder):
        if resume:
            print(f"--resume_from_checkpoint: no {folder}; starting from scratch", flush=True)
        return None
    if not resume:  # hours of training
        raise SystemExit(f"error: {folder} holds an interrupted run; pass --resume_from_checkpoint to continue it, or delete it to start over")
    with open(os.path.join(folder, "trainer_state.json")) as f:
        record = json.load(f)
    differs = settings_differences(record["settings"], settings)
    if differs:
        raise SystemExit(f"error: {folder} was trained with other settings ({differs}); rerun with its settings, or delete it to start over")
    return record


def load_checkpoint(folder: str, record: dict, model, opt, sched, generator) -> None:
    """Restore the weights, AdamW's state, the schedule and the generator of the checkpoint ``record`` describes."""
    device = next(model.parameters()).device
    load_model(model, os.path.join(folder, "model.safetensors"), device=str(device))
    tensors = load_file(os.path.join(folder, "optimizer.safetensors"))
    generator.set_state(tensors.pop("generator"))
    moments: dict[int, dict] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        moments.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": moments, "param_groups": record["param_groups"]})
    sched.load_state_dict(record["scheduler"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--without", default=None, help="the subgroup the reference never sees, e.g. label=horse,domain=art_painting")
    p.add_argument("--datasets", default=DATASETS, help="comma-separated labelled datasets (their train splits)")
    p.add_argument("--config_from", default=os.path.join(SHARED, "models", "mini-clip-64"), help="architecture, tokenizer, image processor")
    p.add_argument("--samples", type=int, default=2_500_000)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_minutes", type=float, default=10.0, help="checkpoint at least this often (wall-clock minutes)")
    p.add_argument("--save_steps", type=int, default=0, help="also checkpoint every this many steps (0: by time only)")
    p.add_argument("--resume_from_checkpoint", action="store_true", help="continue from <output_dir>.incomplete/checkpoint")
    a = p.parse_args(argv)
    without = SubgroupSpec.parse(a.without) if a.without else None
    staging = staging_folder(a.output_dir)  # the folder appears whole or not at all, as a run's does
    checkpoint = os.path.join(staging, "checkpoint")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # also in the settings: the sampler's generator is the device's
    settings = json.loads(json.dumps({**{k: getattr(a, k) for k in TRAINED}, "device": device}))
    resumed = checkpoint_to_resume(checkpoint, settings, a.resume_from_checkpoint)
    torch.manual_seed(a.seed)
    processor = AutoProcessor.from_pretrained(a.config_from)
    config = CLIPConfig.from_pretrained(a.config_from)
    model = CLIPModel(config).to(device).train()  # random weights: nothing of --config_from's training is kept
    pixels, name, word, low_res, names, words, rows = load_training_images(a.datasets.split(","), processor, without)
    ids, mask, cap_words = caption_table(processor.tokenizer, names, words, config.text_config.max_position_embeddings)
    pixels, name, word, low_res = pixels.to(device), name.to(device), word.to(device), low_res.to(device)
    ids, mask, cap_words = ids.to(device), mask.to(device), cap_words.to(device)
    steps = math.ceil(a.samples / a.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=a.learning_rate, weight_decay=a.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, max(1, steps // 20), steps)
    g = torch.Generator(device=device).manual_seed(a.seed)
    done, before = 0, 0.0
    if resumed:
        load_checkpoint(checkpoint, resumed, model, opt, sched, g)
        done, before = resumed["step"], resumed["seconds"]
        print(f"resumed at step {done}/{steps}", flush=True)
    start = saved = time.time()
    for step in range(done + 1, steps + 1):
        idx = torch.randint(len(name), (a.batch_size,), generator=g, device=device)
        x = pixels[idx].float()
        x = torch.where(torch.rand(len(idx), 1, 1, 1, generator=g, device=device) < 0.5, x.flip(-1), x)
        # a template per image: the low-resolution one only for small images
        t = torch.randint(len(TEMPLATES) + 1, (len(idx),), generator=g, device=device)
        t = torch.where((t == len(TEMPLATES)) & ~low_res[idx], torch.randint(len(TEMPLATES), (len(idx),), generator=g, device=device), t)
        key = (name[idx], word[idx], t)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = contrastive_loss(model, x, name[idx], word[idx], ids[key], mask[key], name[idx], cap_words[key])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == steps:
            print(f"step {step}/{steps} loss {loss.item():.3f} {before + time.time() - start:.0f}s", flush=True)
        if step < steps and ((a.save_steps and step % a.save_steps == 0) or time.time() - saved >= 60 * a.save_minutes):
            save_checkpoint(checkpoint, step, before + time.time() - start, settings, model, opt, sched, g)
            saved = time.time()
    seconds = before + time.time() - start
    model.eval().to("cpu")
    zeroshot = {}
    for path in a.datasets.split(","):  # a sanity check of what was learnt: zero-shot on each test split
        test = load_image_dataset(path)["test"]
        images = ImageSet.from_dataset(preprocess(test, processor.image_processor, ["label"], "test"), "label")
        zeroshot.update(evaluate_sets(model, processor.tokenizer, [EvalSet(os.path.basename(os.path.normpath(path)), images, test.features["label"].names)]))
    shutil.rmtree(checkpoint, ignore_errors=True)
    os.makedirs(staging, exist_ok=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    record = {"without": str(without) if without else None, "training_rows": rows, "samples": steps * a.batch_size, "steps": steps,
              "seconds": seconds, "zeroshot_test": zeroshot, **settings}
    write_json(os.path.join(staging, "pretraining.json"), record)
    publish(staging, a.output_dir, overwrite=True)
    print(json.dumps({k: record[k] for k in ("without", "training_rows", "steps", "seconds", "zeroshot_test")}))
    return record


if __name__ == "__main__":
    main()
