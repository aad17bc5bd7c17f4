"""Stage 1, forget: push forget images off their class text while distilling everything else from the teacher."""
from __future__ import annotations

from dataclasses import dataclass

from .. import losses
from ..config import ForgetObjective, ForgetWeight
from .base import UnlearnConfig, UnlearnTrainer


@dataclass
class ForgetConfig(ForgetWeight, ForgetObjective, UnlearnConfig):
    """The forget stage's settings: the forget term (``ForgetObjective``, ``ForgetWeight``) and distillation."""


class ForgetTrainer(UnlearnTrainer):
    stage_name = "forget"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        s, t, class_embeds, text_term = self.embed_batch(model, inputs, ["forget", "retain", "other", "proxy"], self.needs_teacher(forget_term=True))
        labels = inputs["forget"]["labels"]
        terms = {
            "forget": a.forget_weight * losses.forget_loss(
                a.forget_loss, s["forget"], self.logits(s["forget"], class_embeds), self.teacher_logits(t, "forget"),
                class_embeds, labels, margin=a.forget_margin, temperature=a.forget_temperature,
            )
        }
        terms.update(self.distill_terms(s, t, class_embeds))
        if text_term is not None and a.text_distill_weight:
            terms["embed_text"] = a.text_distill_weight * text_term
        with_forget_acc = (self.logits(s["forget"].detach(), class_embeds.detach()).argmax(-1) == labels).float().mean()
        self._terms["forget_acc"].append(float(with_forget_acc))
        loss = self.total_loss(terms)
        return (loss, s) if return_outputs else loss
