"""Stage 1, forget: push forget images off their class text while distilling everything else from the teacher."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import losses
from ..config import ForgetImageObjective, ForgetObjective, ForgetRobustness, ForgetWeight
from .base import UnlearnConfig, UnlearnTrainer


@dataclass
class ForgetConfig(ForgetRobustness, ForgetImageObjective, ForgetWeight, ForgetObjective, UnlearnConfig):
    """The forget stage's settings: the forget term (``ForgetObjective``, ``ForgetWeight``), its image-side term
    (``ForgetImageObjective``), what makes it robust (``ForgetRobustness``) and distillation."""


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

    def training_step(self, model, inputs, num_items_in_batch=None):
        """With ``forget_sam_rho`` > 0, the step's loss and gradient are taken at the weights moved ``forget_sam_rho``
        along the forget term's normalised gradient (the direction that brings the subgroup back), then the weights
        are moved back before the optimiser steps: SAM (Foret et al. 2021) on the forget term, as Fan et al. 2025
        propose against relearning attacks."""
        if not self.args.forget_sam_rho:
            return super().training_step(model, inputs, num_items_in_batch)
        params, moved = self.sharpness_perturbation(model, self._prepare_inputs(inputs))
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            with torch.no_grad():
                torch._foreach_sub_(params, moved)

    def sharpness_perturbation(self, model, inputs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Move the trainable weights by ``forget_sam_rho`` along the gradient of the forget term on this batch's forget
        images; returns the weights and what was added to them. Computed on the unwrapped model, so under DDP each
        process takes its own ascent step (m-sharpness) and no gradient hook fires."""
        student = self.unwrap(model)
        params = [p for p in student.parameters() if p.requires_grad]
        s, t, class_embeds, _ = self.embed_batch(student, inputs, ["forget"], self.needs_teacher(forget_term=True))
        grads = torch.autograd.grad(self.forget_term(s, t, class_embeds, inputs["forget"]["labels"]), params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.to(p.dtype) for p, g in zip(params, grads)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        moved = torch._foreach_mul(grads, float(self.args.forget_sam_rho / (norm + 1e-12)))
        with torch.no_grad():
            torch._foreach_add_(params, moved)
        return params, moved

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
