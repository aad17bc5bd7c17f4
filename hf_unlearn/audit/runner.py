"""The audit of one run: every attack on the unlearned model, the original and a reference, the survivors of FA, the
distance moved and the verdicts. The original's and the reference's results are cached across runs."""
from __future__ import annotations

import logging
import time

import torch

from .. import precision
from ..data import ImageSet, preprocess
from ..evaluation import embed_images, evaluate_sets, predict, score_sets
from ..prompts import TRAIN_TEMPLATES
from .attack_data import RELEARN_CAPTION, AuditData, data_digest, forget_rows, prepare_audit_data
from .attacks import phrasing_attack, probe_accuracy, relative_change, relearn, subgroup_neighbours
from .outcome import verdicts
from .phrasings import load_bank

logger = logging.getLogger("hf_unlearn")
NEIGHBOURS = 10  # training images per survivor whose membership says whether it looks like the subgroup


def _embed_train(model, processor, data: AuditData, chunk: int = 1024) -> dict[str, torch.Tensor]:
    """Image embeddings and labels of every row of the training split (preprocessed once, cached by ``datasets``), streamed."""
    ds = preprocess(data.train_rows, processor.image_processor, [data.class_column], "train (audit probe)")
    chunks, labels = [], []
    for i in range(0, len(ds), chunk):
        batch = ImageSet.from_dataset(ds.select(range(i, min(i + chunk, len(ds)))), data.class_column)
        chunks.append(embed_images(model, batch.pixel_values))
        labels.append(batch.labels)
    return {"embeddings": torch.cat(chunks), "labels": torch.cat(labels)}


def _train_embeddings_entry(folder: str, processor, data: AuditData):
    """Where a checkpoint's probe embeddings are kept across runs: keyed by its weights, the training split, the image
    processor and the precision, not by the subgroup (the probe reads every row whatever is forgotten), so the audit of
    another subgroup of the same data embeds the split with the original only once."""
    from ..run import cache_file
    from ..soup import weights_digest

    return cache_file("probe_embeddings", [weights_digest(folder), data.train_rows._fingerprint, data.class_column,
                                           processor.image_processor.to_json_string(), precision.inference_key(), 1], suffix=".safetensors")


def _train_embeddings(model, processor, data: AuditData, weights_folder: str | None) -> dict[str, torch.Tensor]:
    """The training split's embeddings by ``model``: cached across runs when it is a checkpoint (``weights_folder``)."""
    from ..run import cached_tensors

    embed = lambda: _embed_train(model, processor, data)  # noqa: E731
    return (cached_tensors(_train_embeddings_entry(weights_folder, processor, data), embed, "probe embeddings of the training split")
            if weights_folder else embed())



def _relearn_fa(model, tokenizer, data: AuditData, args, eval_templates, with_forget: bool) -> float:
    images, texts = data.kept, list(data.kept_captions)
    if with_forget:
        n = min(args.audit_relearn_forget_images, len(data.forget))
        pick = torch.randperm(len(data.forget), generator=torch.Generator().manual_seed(args.seed))[:n]
        images = ImageSet.concat(images, data.forget.subset(pick))
        texts += [data.forget_captions[i] for i in pick.tolist()]
    attacked = relearn(model, tokenizer, images, texts, args.audit_relearn_steps, args.audit_relearn_learning_rate,
                       args.audit_relearn_batch_size, args.seed)
    return evaluate_sets(attacked, tokenizer, [forget_rows(data.test)], eval_templates)["FA"]


def attack_model(model, processor, data: AuditData, args, bank, eval_templates, images: torch.Tensor | None = None,
                 weights_folder: str | None = None) -> dict:
    """Every attack on one model; ``images``: its test-set embeddings when the run already has them; ``weights_folder``:
    its checkpoint when it is one (the original, a reference), whose probe embeddings are then cached across runs."""
    tokenizer = processor.tokenizer
    train = _train_embeddings(model, processor, data, weights_folder)
    x_train, y_train = train["embeddings"], train["labels"]
    forget_mask = data.test.masks["forget"]
    if images is None:
        images = embed_images(model, data.test.images.pixel_values)  # once: every head below reads the same embeddings
    return {
        "FA": score_sets([data.test], [predict(model, tokenizer, data.test, eval_templates, images)])["FA"],
        "phrasing": phrasing_attack(model, tokenizer, data.test, bank, images),
        "relearn_retain_only": _relearn_fa(model, tokenizer, data, args, eval_templates, with_forget=False),
        "relearn_retain_plus_forget": _relearn_fa(model, tokenizer, data, args, eval_templates, with_forget=True),
        "probe": probe_accuracy(x_train, y_train, images[forget_mask], data.test.images.labels[forget_mask], len(data.test.class_names)),
    }


def survivors(unlearned, original, processor, data: AuditData, eval_templates, original_folder: str | None = None,
              test_images: dict[str, torch.Tensor] | None = None, k: int = NEIGHBOURS) -> dict:
    """The forget test images the unlearned model still recognises under the reported templates, and whether they look
    like the subgroup: per image, the share of its ``k`` nearest training images of its class (the original's embeddings,
    the probe's) that are in the subgroup. Survivors with a share under one half sit among the retained siblings: FA
    cannot reach zero there without forgetting what looks like what must be kept."""
    test_images = test_images or {}
    mask = data.test.masks["forget"]
    labels = data.test.images.labels
    recognised = (predict(unlearned, processor.tokenizer, data.test, eval_templates, test_images.get("unlearned")) == labels)[mask]
    forget_embeds = (test_images["original"][mask] if test_images.get("original") is not None
                     else embed_images(original, data.test.images.pixel_values[mask]))
    train = _train_embeddings(original, processor, data, original_folder)
    share = subgroup_neighbours(forget_embeds, labels[mask], train["embeddings"], train["labels"], data.train_forget, k)
    rows = mask.nonzero().flatten()
    kept = [{"row": int(rows[i]), "subgroup_share": float(share[i])} for i in recognised.nonzero().flatten().tolist()]
    return {"k": k, "forget_test_images": int(mask.sum()), "recognised": kept,
            "like_siblings": sum(r["subgroup_share"] < 0.5 for r in kept), "subgroup_share_mean": float(share.nanmean())}



def _attack_cache_entry(folder: str, digest: str, args, bank, eval_templates):
    """Where one model's attack results are kept across runs: keyed by its weights, the audit's data, settings, phrasings,
    templates and precision. The original's and the reference's results do not depend on what was unlearned."""
    from ..run import cache_file
    from ..soup import weights_digest

    settings = [args.audit_relearn_steps, args.audit_relearn_learning_rate, args.audit_relearn_batch_size, args.audit_relearn_forget_images, args.seed]
    return cache_file("audit", [weights_digest(folder), digest, settings, list(bank), list(eval_templates), precision.inference_key(), 1])


def run_audit(unlearned, original, processor, data: AuditData, args, eval_templates, reference=None, modules=None,
              weights_folders: dict[str, str] | None = None, test_images: dict[str, torch.Tensor] | None = None) -> dict:
    """The audit section of a report: each attack on each model, the distance moved, a verdict per attack.

    ``weights_folders``: the checkpoint folders of the original and the reference, whose attack results are then
    cached on disk (``$HF_UNLEARN_CACHE/audit``) and reused by any later audit of the same data, and their probe
    embeddings of the training split (``$HF_UNLEARN_CACHE/probe_embeddings``) by any audit of the same split. ``test_images``:
    the models' embeddings of the test set that the run already computed, by name ("unlearned", "original"; None
    where it did not)."""
    from ..run import cached_json

    t0 = time.time()
    bank = load_bank(args.audit_phrasings) if args.audit_phrasings else load_bank()
    used = set(TRAIN_TEMPLATES) | set(eval_templates) | set(filter(None, (args.train_templates or "").split("|")))
    bank = [p for p in bank if p not in used]  # held out from every template a run trains, calibrates or reports with
    results, folders = {}, weights_folders or {}
    digest = data_digest(data) if folders else None
    for name, model in (("unlearned", unlearned), ("original", original), ("reference", reference)):
        if model is not None:
            logger.info("audit: attacking the %s model", name)
            attack = lambda: attack_model(model, processor, data, args, bank, eval_templates, (test_images or {}).get(name), folders.get(name))  # noqa: E731
            results[name] = (cached_json(_attack_cache_entry(folders[name], digest, args, bank, eval_templates), attack, f"audit of the {name} model")
                             if name in folders else attack())
    found = survivors(unlearned, original, processor, data, eval_templates, folders.get("original"), test_images)
    return {**results, "survivors": found, "distance": relative_change(unlearned, original, modules), "verdicts": verdicts(results, args),
            "settings": {"phrasings": len(bank), "relearn_steps": args.audit_relearn_steps, "relearn_learning_rate": args.audit_relearn_learning_rate,
                         "relearn_batch_size": args.audit_relearn_batch_size, "relearn_forget_images": args.audit_relearn_forget_images,
                         "caption": RELEARN_CAPTION, "reference_model": args.reference_model},
            "seconds": time.time() - t0}


def audit_run(run, final, modules: list[str], final_test_images: torch.Tensor | None = None) -> dict:
    """The audit at the end of a run, on the run's own groups and test set (and the embeddings of it the run computed)."""
    from ..family import load_model, weights_folder
    from ..groups import load_checked

    train = load_checked(run.args)[run.args.train_split]
    data = prepare_audit_data(run.args, run.processor, run.groups, run.test_sets[0], train)
    reference = load_model(run.args.reference_model, run.attn) if run.args.reference_model else None
    folders = {"original": weights_folder(run.args.model_name_or_path)}
    if reference is not None:
        folders["reference"] = weights_folder(run.args.reference_model)
    return run_audit(final, run.original_model, run.processor, data, run.args, run.eval_templates, reference, modules, folders,
                     {"unlearned": final_test_images, "original": run.original_test_images})

