"""Stage 1, forget: push forget images off their class text while distilling everything else from the teacher."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import losses
from ..config import ForgetImageObjective, ForgetObjective, ForgetWeight
from .base import UnlearnConfig, UnlearnTrainer


@dataclass
class ForgetConfig(ForgetImageObjective, ForgetWeight, ForgetObjective, UnlearnConfig):
    """The forget stage's settings: the forget term (``ForgetObjective``, ``ForgetWeight``), its image-side term
    (``ForgetImageObjective``) and distillation."""


class ForgetTrainer(UnlearnTrainer):
    stage_name = "forget"
    reads_proxies = True

    def __init__(self, *args, forget_targets: torch.Tensor | None = None, **kwargs):
        """``forget_targets``: per forget-stream row, the unit-norm embedding the image-side term pulls it to (needed
        when ``forget_image_weight`` > 0)."""
        super().__init__(*args, **kwargs)
        if self.args.forget_image_weight and forget_targets is None:
            raise ValueError("forget_image_weight > 0 needs forget_targets, one embedding per forget image")
        self.forget_targets = None if forget_targets is None else forget_targets.to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        s, t, class_embeds, text_term = self.embed_batch(model, inputs, ["forget", "retain", "other", "proxy"], self.needs_teacher(forget_term=True))
        labels = inputs["forget"]["labels"]
        terms = {"forget": a.forget_weight * self.forget_term(s, t, class_embeds, labels)}
        if a.forget_image_weight:
            targets = self.forget_targets[inputs["forget"]["index"].to(self.forget_targets.device)]
            terms["forget_image"] = a.forget_image_weight * losses.embedding_distill_loss(s["forget"], targets)
        terms.update(self.distill_terms(s, t, class_embeds))
        if text_term is not None and a.text_distill_weight:
            terms["embed_text"] = a.text_distill_weight * text_term
        with_forget_acc = (self.logits(s["forget"].detach(), class_embeds.detach()).argmax(-1) == labels).float().mean()
        self._terms["forget_acc"].append(float(with_forget_acc))
        loss = self.total_loss(terms)
        return (loss, s) if return_outputs else loss
