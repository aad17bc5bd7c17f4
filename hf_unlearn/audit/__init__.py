"""The robustness audit: is the subgroup gone for every way of asking, and not one fine-tune away from coming back?

Every run ends with it (``--no_audit`` skips it); ``python -m hf_unlearn.audit`` runs it on its own. It attacks the
unlearned model, the original and, when given, a reference model that never saw the subgroup, with the same
attacks (``attacks.py``), and calls each attack ``forgotten`` or ``shallow``: against the reference where there is
one (within ``--audit_margin`` of its FA), else against the stated thresholds.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import precision
from ..data import ImageSet, preprocess
from ..evaluation import EvalSet, embed_images, evaluate_sets, predict, score_sets
from ..prompts import TRAIN_TEMPLATES, class_prompt_name
from .attacks import load_bank, phrasing_attack, probe_accuracy, relative_change, relearn, subgroup_neighbours

logger = logging.getLogger("hf_unlearn")
RELEARN_CAPTION = "a {domain} of a {cls}."
NEIGHBOURS = 10  # training images per survivor whose membership says whether it looks like the subgroup


@dataclass
class AuditData:
    test: EvalSet  # the eval split with forget / retain / other masks
    kept: ImageSet  # retain and other-class training images: what an attacker fine-tunes on
    kept_captions: list[str]
    forget: ImageSet  # forget training images, a few of which attack (b) mixes in
    forget_captions: list[str]
    train_rows: object  # the whole training split (a datasets.Dataset): the probe is fitted on every row
    class_column: str
    train_forget: torch.Tensor  # the forget subgroup's rows of that split (bool mask), whatever a run capped


def captions(train, rows, spec, class_column: str) -> list[str]:
    """"a {domain} of a {class}." per row, the domain from the spec's other column ("photo" when it has none)."""
    names = train.features[class_column].names
    other = next((c for c, _ in spec.conditions if c != class_column), None)
    labels = np.asarray(train[class_column])[rows]
    if other is None:
        return [RELEARN_CAPTION.format(domain="photo", cls=class_prompt_name(names[c])) for c in labels]
    values = np.asarray(train[other])[rows]
    words = getattr(train.features[other], "names", None)
    return [RELEARN_CAPTION.format(domain=class_prompt_name(str(words[v] if words else v)), cls=class_prompt_name(names[c]))
            for v, c in zip(values, labels)]


def prepare_audit_data(args, processor, groups, test: EvalSet, train) -> AuditData:
    """The audit's data from a run's groups (the same images the run trained on) and its test set."""
    from ..spec import SubgroupSpec

    spec = SubgroupSpec.parse(args.forget)
    splits = groups.splits
    kept = ImageSet.concat(groups.train["retain"], groups.train["other"])
    kept_rows = np.concatenate([splits.retain, splits.other])
    return AuditData(test, kept, captions(train, kept_rows, spec, args.class_column), groups.train["forget"],
                     captions(train, splits.forget, spec, args.class_column), train, args.class_column, torch.from_numpy(spec.mask(train)))


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


def forget_rows(test: EvalSet) -> EvalSet:
    """The test set's forget rows alone: all a relearning attack's FA reads (on CIFAR-10 a tenth of the set)."""
    mask = test.masks["forget"]
    return EvalSet(test.name, test.images.subset(mask.nonzero().flatten()), test.class_names, {"forget": torch.ones(int(mask.sum()), dtype=torch.bool)})


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


def survivors_line(s: dict) -> str:
    """One line on FA's survivors: how many, and how many look like the retained siblings rather than the subgroup."""
    n = len(s["recognised"])
    head = f"still recognised under the reported templates: {n} of {s['forget_test_images']} forget test images"
    if not n:
        return head + "."
    rows = ", ".join(str(r["row"]) for r in s["recognised"][:10]) + (", ..." if n > 10 else "")
    verb = "looks" if s["like_siblings"] == 1 else "look"
    return (f"{head} (test rows {rows}); {s['like_siblings']} of them {verb} like the retained siblings (under half of their "
            f"{s['k']} nearest training images of the class are in the subgroup; {s['subgroup_share_mean']:.0%} on average over "
            f"the subgroup's test images).")


def verdicts(results: dict, args) -> dict:
    """Per attack: ``forgotten`` or ``shallow``, and what it was compared with."""
    unlearned, original, reference = results["unlearned"], results["original"], results.get("reference")
    scores = {"phrasing": lambda r: r["phrasing"]["worst_FA"], "relearn_retain_only": lambda r: r["relearn_retain_only"],
              "relearn_retain_plus_forget": lambda r: r["relearn_retain_plus_forget"], "probe": lambda r: r["probe"]}
    thresholds = {"phrasing": args.audit_phrasing_fa, "relearn_retain_only": args.audit_relearn_fa,
                  "relearn_retain_plus_forget": args.audit_relearn_fa, "probe": args.audit_probe_fraction * original["probe"]}
    out = {}
    for attack, score in scores.items():
        bar, against = ((score(reference) + args.audit_margin, "reference + margin") if reference is not None
                        else (thresholds[attack], "threshold"))
        out[attack] = {"verdict": "forgotten" if score(unlearned) <= bar + 1e-12 else "shallow", "score": score(unlearned),
                       "bar": bar, "against": against}
    return out


def _data_digest(data: AuditData) -> str:
    """What the attacks read, hashed: test images, labels and masks; the attacker's images and captions; the probe's rows."""
    digest = hashlib.sha256()
    for t in (data.test.images.pixel_values, data.test.images.labels, *data.test.masks.values(), data.kept.pixel_values, data.kept.labels,
              data.forget.pixel_values, data.forget.labels):
        digest.update(t.contiguous().numpy().tobytes())
    digest.update(json.dumps([data.kept_captions, data.forget_captions, data.train_rows._fingerprint, data.class_column]).encode())
    return digest.hexdigest()


def _attack_cache_entry(folder: str, data_digest: str, args, bank, eval_templates):
    """Where one model's attack results are kept across runs: keyed by its weights, the audit's data, settings, phrasings,
    templates and precision. The original's and the reference's results do not depend on what was unlearned."""
    from ..run import cache_file
    from ..soup import weights_digest

    settings = [args.audit_relearn_steps, args.audit_relearn_learning_rate, args.audit_relearn_batch_size, args.audit_relearn_forget_images, args.seed]
    return cache_file("audit", [weights_digest(folder), data_digest, settings, list(bank), list(eval_templates), precision.inference_key(), 1])


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
    data_digest = _data_digest(data) if folders else None
    for name, model in (("unlearned", unlearned), ("original", original), ("reference", reference)):
        if model is not None:
            logger.info("audit: attacking the %s model", name)
            attack = lambda: attack_model(model, processor, data, args, bank, eval_templates, (test_images or {}).get(name), folders.get(name))  # noqa: E731
            results[name] = (cached_json(_attack_cache_entry(folders[name], data_digest, args, bank, eval_templates), attack, f"audit of the {name} model")
                             if name in folders else attack())
    found = survivors(unlearned, original, processor, data, eval_templates, folders.get("original"), test_images)
    return {**results, "survivors": found, "distance": relative_change(unlearned, original, modules), "verdicts": verdicts(results, args),
            "settings": {"phrasings": len(bank), "relearn_steps": args.audit_relearn_steps, "relearn_learning_rate": args.audit_relearn_learning_rate,
                         "relearn_batch_size": args.audit_relearn_batch_size, "relearn_forget_images": args.audit_relearn_forget_images,
                         "caption": RELEARN_CAPTION, "reference_model": args.reference_model},
            "seconds": time.time() - t0}


def audit_run(run, final, modules: list[str], final_test_images: torch.Tensor | None = None) -> dict:
    """The audit at the end of a run, on the run's own groups and test set (and the embeddings of it the run computed)."""
    from ..family import load_clip
    from ..groups import load_checked

    train = load_checked(run.args)[run.args.train_split]
    data = prepare_audit_data(run.args, run.processor, run.groups, run.test_sets[0], train)
    from ..family import weights_folder

    reference = load_clip(run.args.reference_model, run.attn)[0] if run.args.reference_model else None
    folders = {"original": weights_folder(run.args.model_name_or_path)}
    if reference is not None:
        folders["reference"] = weights_folder(run.args.reference_model)
    return run_audit(final, run.original_model, run.processor, data, run.args, run.eval_templates, reference, modules, folders,
                     {"unlearned": final_test_images, "original": run.original_test_images})


ATTACK_NAMES = {"phrasing": "worst single phrasing (FA)", "relearn_retain_only": "relearning on retain images (FA)",
                "relearn_retain_plus_forget": "relearning on retain + forget images (FA)", "probe": "linear probe (class accuracy)"}


def card_section(audit: dict) -> str:
    """The model card's "Robustness audit" section."""
    has_ref = "reference" in audit
    head = "| attack | unlearned | original |" + (" reference |" if has_ref else "") + " verdict |"
    rows = [head, "|---" * (4 + has_ref) + "|"]
    for attack, v in audit["verdicts"].items():
        values = [v["score"], _score(audit["original"], attack)] + ([_score(audit["reference"], attack)] if has_ref else [])
        rows.append(f"| {ATTACK_NAMES[attack]} | " + " | ".join(f"{x:.2%}" for x in values) + f" | **{v['verdict']}** (bar {v['bar']:.2%}, {v['against']}) |")
    worst = audit["unlearned"]["phrasing"]
    return ("## Robustness audit\n\n" + "\n".join(rows) + f"\n\nWorst phrasing: \"{worst['worst_phrasing']}\" (mean FA over "
            f"{audit['settings']['phrasings']} phrasings {worst['mean_FA']:.2%}). Relearning: {audit['settings']['relearn_steps']} AdamW "
            f"steps at lr {audit['settings']['relearn_learning_rate']:g}, batch {audit['settings']['relearn_batch_size']}, captions "
            f"\"{audit['settings']['caption']}\"; (b) adds {audit['settings']['relearn_forget_images']} forget images."
            + (f" FA's survivors: {survivors_line(audit['survivors'])}" if audit.get("survivors") else "")
            + ("" if has_ref else f"\n\n{NO_REFERENCE}") + "\n")


NO_REFERENCE = ("Without a reference model (`--reference_model`: one trained without the subgroup) the bars are fixed thresholds. A "
                "model that never saw the subgroup can itself exceed them where the subgroup looks like what is kept (a class's "
                "paintings or photos beside its other domains): *shallow* then says the subgroup can be brought back, not that "
                "retraining would have kept it out.")


def verdict_lines(audit: dict) -> list[str]:
    """One line per attack, then the audit's outcome: what a run and ``python -m hf_unlearn.audit`` print."""
    lines = [f"{ATTACK_NAMES[a]:<45} {v['score']:>8.2%}  {v['verdict']} (bar {v['bar']:.2%}, {v['against']})" for a, v in audit["verdicts"].items()]
    if audit.get("survivors"):
        lines.append(survivors_line(audit["survivors"]))
    return [*lines, audit_outcome(audit)]


def audit_outcome(audit: dict, figures: str = "the model card's Robustness audit section") -> str:
    """One line: forgotten under every attack, or which attacks bring the subgroup back (``figures``: where to read more)."""
    shallow = [ATTACK_NAMES[a].split(" (")[0] for a, v in audit["verdicts"].items() if v["verdict"] != "forgotten"]
    n = len(audit["verdicts"])
    if not shallow:
        return f"Robustness audit: forgotten under all {n} attacks."
    return (f"Robustness audit: SHALLOW under {len(shallow)} of {n} attacks ({'; '.join(shallow)}): an attacker can bring the "
            f"subgroup back ({figures}).")


def _score(result: dict, attack: str) -> float:
    return result["phrasing"]["worst_FA"] if attack == "phrasing" else result[attack]
