"""Baseline unlearning methods as single-stage Trainers, for comparison with forget-remind-restore.

Each method is one ``UnlearnTrainer`` subclass with its own config. They share the data plumbing (the
``UnlearningCollator`` streams, the frozen teacher, the class prompt bank) but none of the project's extras:
no proxy / embedding distillation, no LoRA, no EMA. Forget-side terms are classification losses over the class
bank (``losses`` explains why); "keep" is the family's own loss on the retain set (``keep_loss``).

The retain set of a baseline is all the kept training data, as in the unlearning literature: the forget class's
sibling subgroups (``retain`` stream) *and* the other classes (``other`` stream), one image of each per primary
image. Keeping only the siblings would train every image toward the forget class and hand the baselines a
collapse of the other classes that is the protocol's fault, not the method's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import losses, precision
from ..config import CLIPEraseArguments, ForgetWeight, SalUnArguments, ScrubArguments
from ..prompts import encode_images
from .base import UnlearnConfig, UnlearnTrainer

KEPT_STREAMS = ("retain", "other")  # a baseline's retain set: sibling subgroups + other classes


# ---- configs: each mixes in the settings groups its trainer reads (hf_unlearn.config) ---------------------------

@dataclass
class GAConfig(UnlearnConfig):
    """Gradient ascent has no weight of its own: only the learning rate and the step count bound it."""


@dataclass
class FTConfig(UnlearnConfig):
    """Fine-tuning on retain only has no weight of its own."""


@dataclass
class NegGradPlusConfig(ForgetWeight, UnlearnConfig):
    """NegGrad+: ``forget_weight`` scales the ascent on forget images."""


@dataclass
class RLConfig(ForgetWeight, UnlearnConfig):
    """Random labels: ``forget_weight`` scales the cross-entropy toward random wrong classes."""


@dataclass
class SCRUBConfig(ScrubArguments, UnlearnConfig):
    """SCRUB: ``scrub_alpha`` weighs the keep-loss in its min steps; ``scrub_max_fraction`` places its max steps."""


@dataclass
class SalUnConfig(SalUnArguments, RLConfig):
    """SalUn: random labels on the ``saliency_fraction`` most salient weight entries."""

    def check(self):
        if self.weight_decay != 0:  # decoupled decay would move the weights the mask is meant to freeze
            raise ValueError(f"SalUn needs weight_decay=0 so unselected weights stay fixed, got {self.weight_decay}")


@dataclass
class CLIPEraseConfig(CLIPEraseArguments, ForgetWeight, UnlearnConfig):
    """CLIPErase: ``forget_weight`` on its forgetting term, ``consistency_weight`` on KD to the original."""


# ---- trainers ---------------------------------------------------------------------------------------------

class _BaselineTrainer(UnlearnTrainer):
    """Helpers the baselines share: forget accuracy in the log, seeded per-step randomness, the return value."""

    def log_forget_acc(self, embeds, class_embeds, labels) -> None:
        with torch.no_grad():
            acc = (self.logits(embeds.detach(), class_embeds.detach()).argmax(-1) == labels).float().mean()
        self._terms["forget_acc"].append(float(acc))

    def step_generator(self) -> torch.Generator:
        """A CPU generator seeded by (seed, optimiser step, process): a resumed run redraws the same values."""
        entropy = [self.args.seed, self.state.global_step, self.args.process_index]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))

    @staticmethod
    def kept(embeds: dict, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and labels of the retain set in this batch: every ``KEPT_STREAMS`` stream it carries."""
        names = [n for n in KEPT_STREAMS if n in embeds]
        return torch.cat([embeds[n] for n in names]), torch.cat([inputs[n]["labels"] for n in names])

    def keep_terms(self, model, s, class_embeds, inputs, weight: float = 1.0) -> dict[str, torch.Tensor]:
        embeds, labels = self.kept(s, inputs)
        return {"keep": weight * self.keep_loss(model, self.logits(embeds, class_embeds), labels)} if weight else {}

    def loss_and_outputs(self, terms, s, return_outputs):
        loss = self.total_loss(terms)
        return (loss, s) if return_outputs else loss


class GATrainer(_BaselineTrainer):
    """Gradient ascent on the forget set only (Thudi et al. 2022; Golatkar et al. CVPR 2020 baseline)."""

    stage_name = "ga"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        s, _, class_embeds, _ = self.embed_batch(model, inputs, ["forget"], with_teacher=False)
        labels = inputs["forget"]["labels"]
        self.log_forget_acc(s["forget"], class_embeds, labels)
        terms = {"ascent": losses.gradient_ascent_loss(self.logits(s["forget"], class_embeds), labels)}
        return self.loss_and_outputs(terms, s, return_outputs)


class NegGradPlusTrainer(_BaselineTrainer):
    """NegGrad+ / gradient difference (Kurmanji et al. NeurIPS 2023; Liu et al. 2022): ascent on forget images,
    descent of the keep-loss on retain images."""

    stage_name = "neggrad_plus"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        s, _, class_embeds, _ = self.embed_batch(model, inputs, ["forget", *KEPT_STREAMS], with_teacher=False)
        labels = inputs["forget"]["labels"]
        self.log_forget_acc(s["forget"], class_embeds, labels)
        terms = {"ascent": self.args.forget_weight * losses.gradient_ascent_loss(self.logits(s["forget"], class_embeds), labels)}
        terms.update(self.keep_terms(model, s, class_embeds, inputs))
        return self.loss_and_outputs(terms, s, return_outputs)


class FTTrainer(_BaselineTrainer):
    """Fine-tuning on retain images only, relying on catastrophic forgetting (Warnecke et al. NDSS 2023)."""

    stage_name = "ft"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        s, _, class_embeds, _ = self.embed_batch(model, inputs, list(KEPT_STREAMS), with_teacher=False)
        return self.loss_and_outputs(self.keep_terms(model, s, class_embeds, inputs), s, return_outputs)


class RLTrainer(_BaselineTrainer):
    """Random labels (Golatkar et al. CVPR 2020): forget images trained toward random wrong classes, plus the
    keep-loss on retain images. The wrong classes are redrawn every step from ``step_generator``."""

    stage_name = "rl"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        s, _, class_embeds, _ = self.embed_batch(model, inputs, ["forget", *KEPT_STREAMS], with_teacher=False)
        labels = inputs["forget"]["labels"]
        self.log_forget_acc(s["forget"], class_embeds, labels)
        wrong = losses.random_other_labels(labels, len(class_embeds), self.step_generator())
        terms = {"random": self.args.forget_weight * losses.random_label_loss(self.logits(s["forget"], class_embeds), wrong)}
        terms.update(self.keep_terms(model, s, class_embeds, inputs))
        return self.loss_and_outputs(terms, s, return_outputs)


class SCRUBTrainer(_BaselineTrainer):
    """SCRUB (Kurmanji et al. NeurIPS 2023): a student that alternates max steps (move away from the teacher on
    forget images) with min steps (stay with the teacher and the labels on retain images)."""

    stage_name = "scrub"

    def is_max_step(self) -> bool:
        """Even optimiser steps within the first ``scrub_max_fraction`` of the run; read from the Trainer state, so a
        resumed run keeps the schedule (all micro-batches of one accumulated step share a phase). A fraction of the
        steps, not of epochs over the forget set: with a step budget of several forget epochs, one epoch of max
        steps would leave SCRUB ~7 % of its steps to forget with, far below the paper's share."""
        step = self.state.global_step
        return step < self.args.scrub_max_fraction * self.state.max_steps and step % 2 == 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        if self.is_max_step():
            s, t, class_embeds, _ = self.embed_batch(model, inputs, ["forget"])
            self.log_forget_acc(s["forget"], class_embeds, inputs["forget"]["labels"])
            student, teacher = self.logits(s["forget"], class_embeds), self.logits(t["forget"], self.class_embeds)
            terms = {"max": losses.scrub_max_loss(student, teacher, a.kd_temperature)}
        else:
            s, t, class_embeds, _ = self.embed_batch(model, inputs, list(KEPT_STREAMS))
            student, teacher = self.logits(self.kept(s, inputs)[0], class_embeds), self.logits(self.kept(t, inputs)[0], self.class_embeds)
            terms = {"kd_retain": losses.kd_logit_loss(student, teacher, a.kd_temperature)}
            terms.update(self.keep_terms(model, s, class_embeds, inputs, a.scrub_alpha))
        return self.loss_and_outputs(terms, s, return_outputs)


def saliency_mask(
    model,
    forget_pixels: torch.Tensor,
    forget_labels: torch.Tensor,
    class_embeds: torch.Tensor | Callable[[], torch.Tensor],
    logit_scale: float,
    fraction: float = 0.5,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """SalUn's weight saliency (Fan et al. ICLR 2024): which weight entries the forget loss depends on most.

    |grad| of the forget classification loss (cross-entropy over the class bank, averaged over all forget
    images) for every trainable parameter; the top ``fraction`` of entries under one global threshold are
    kept. Entries with zero gradient are never kept (ties at the threshold are). ``class_embeds`` may be a
    callable that runs the text tower, so text weights get a saliency too. Leaves ``.grad`` untouched.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters to compute a saliency mask for")
    device, n = named[0][1].device, len(forget_labels)
    grads = [torch.zeros_like(p, dtype=torch.float32) for _, p in named]
    was_training = model.training
    model.eval()  # dropout off: the mask must not depend on noise
    try:
        for i in range(0, n, batch_size):
            pixels, labels = forget_pixels[i : i + batch_size].to(device), forget_labels[i : i + batch_size].to(device)
            with precision.autocast(device):
                image = encode_images(model, pixels)
            bank = class_embeds() if callable(class_embeds) else class_embeds
            loss = F.cross_entropy(losses.class_logits(image, bank.to(device), logit_scale), labels, reduction="sum") / n
            for g, part in zip(grads, torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)):
                if part is not None:
                    g += part.float()
    finally:
        model.train(was_training)
    scores = torch.cat([g.abs().flatten() for g in grads])
    k = max(1, round(fraction * scores.numel()))
    threshold = torch.kthvalue(scores.cpu(), scores.numel() - k + 1).values.to(device)  # the k-th largest
    return {name: (g.abs() >= threshold) & (g != 0) for (name, _), g in zip(named, grads)}


class SalUnTrainer(RLTrainer):
    """SalUn (Fan et al. ICLR 2024): random-label unlearning restricted to salient weights.

    ``saliency_mask`` ({parameter name: bool tensor}, from ``saliency_mask()`` on the same model) must cover
    every trainable parameter. Gradient hooks zero the unselected entries, so with AdamW and weight decay 0
    they stay exactly unchanged. Hooks act on plain parameters: not for FSDP's flattened ones.
    """

    stage_name = "salun"

    def __init__(self, *args, saliency_mask: dict[str, torch.Tensor], **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_handles = self._register_mask(saliency_mask)

    def _register_mask(self, mask: dict[str, torch.Tensor]) -> list:
        params = {n: p for n, p in self.unwrap(self.model).named_parameters() if p.requires_grad}
        missing, unknown = sorted(set(params) - set(mask)), sorted(set(mask) - set(params))
        if missing or unknown:
            raise ValueError(f"saliency mask does not match the trainable parameters: missing {missing[:5]}, "
                             f"unknown {unknown[:5]}")
        handles = []
        for name, p in params.items():
            frozen = ~mask[name].to(device=p.device, dtype=torch.bool)
            if frozen.shape != p.shape:
                raise ValueError(f"saliency mask for {name} has shape {tuple(frozen.shape)}, the parameter {tuple(p.shape)}")
            handles.append(p.register_hook(lambda g, frozen=frozen: g.masked_fill(frozen, 0)))
        return handles

    def remove_mask(self) -> None:
        """Detach the gradient hooks (e.g. before reusing the model outside this trainer)."""
        for h in self.mask_handles:
            h.remove()
        self.mask_handles = []


class CLIPEraseTrainer(_BaselineTrainer):
    """CLIPErase (Yang et al. 2024): a forgetting term (forget images' cosine to their class text), a retention
    term (the keep-loss on retain images) and a consistency term (logit KD to the original on retain images)."""

    stage_name = "clip_erase"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        s, t, class_embeds, _ = self.embed_batch(model, inputs, ["forget", *KEPT_STREAMS], with_teacher=a.consistency_weight > 0)
        labels = inputs["forget"]["labels"]
        self.log_forget_acc(s["forget"], class_embeds, labels)
        terms = {"forget": a.forget_weight * losses.clip_erase_forget_loss(s["forget"], class_embeds, labels)}
        terms.update(self.keep_terms(model, s, class_embeds, inputs))
        if a.consistency_weight:
            terms["consistency"] = a.consistency_weight * losses.kd_logit_loss(
                self.logits(self.kept(s, inputs)[0], class_embeds), self.logits(self.kept(t, inputs)[0], self.class_embeds), a.kd_temperature
            )
        return self.loss_and_outputs(terms, s, return_outputs)
