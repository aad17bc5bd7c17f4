"""Stage 1, forget: push forget images off their class text while distilling everything else from the teacher."""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import losses
from .base import UnlearnConfig, UnlearnTrainer


@dataclass
class ForgetConfig(UnlearnConfig):
    forget_loss: str = field(
        default="teacher_others",
        metadata={"help": "Forget objective: similarity (paper: minimise forget image-text cosine), margin "
                  "(true class loses to the best other by a margin), teacher_others (match the teacher among the other classes)."},
    )
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the forget objective."})
    forget_margin: float = field(default=2.0, metadata={"help": "Logit margin for forget_loss=margin."})
    forget_temperature: float = field(default=1.0, metadata={"help": "Temperature of the target for forget_loss=teacher_others."})

    def __post_init__(self):
        super().__post_init__()
        if self.forget_loss not in losses.FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {losses.FORGET_LOSSES}, got {self.forget_loss!r}")
        if self.forget_weight <= 0:
            raise ValueError(f"forget_weight must be > 0, got {self.forget_weight}")


class ForgetTrainer(UnlearnTrainer):
    stage_name = "forget"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        s, t, class_embeds, text_term = self.embed_batch(model, inputs, ["forget", "retain", "anchor", "proxy"])
        labels = inputs["forget"]["labels"]
        terms = {
            "forget": a.forget_weight * losses.forget_loss(
                a.forget_loss, s["forget"], self.logits(s["forget"], class_embeds), self.logits(t["forget"], self.class_embeds),
                class_embeds, labels, margin=a.forget_margin, temperature=a.forget_temperature,
            )
        }
        terms.update(self.distill_terms(s, t, class_embeds))
        if text_term is not None and a.text_distill_weight:
            terms["embed_text"] = a.text_distill_weight * text_term
        with_forget_acc = (self.logits(s["forget"].detach(), class_embeds.detach()).argmax(-1) == labels).float().mean()
        self._terms["forget_acc"].append(float(with_forget_acc))
        loss = self.finish(terms)
        return (loss, s) if return_outputs else loss
