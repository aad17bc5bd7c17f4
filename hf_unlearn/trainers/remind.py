"""Stage 2, remind: repair over-forgetting of the siblings with CLIP's contrastive loss, keeping an EMA of weights."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

from .. import losses
from .base import UnlearnConfig, UnlearnTrainer


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * params, in place."""
    torch._foreach_lerp_(ema, params, 1.0 - decay)


@dataclass
class RemindConfig(UnlearnConfig):
    ema_decay: float = field(default=0.9, metadata={"help": "EMA decay of the weights (0 disables the EMA: the last weights are saved)."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Weight of the contrastive loss on retain image / class text."})
    forget_guard_weight: float = field(
        default=1.0, metadata={"help": "Weight of a forget term on forget images, so reminding does not bring the subgroup back; 0 disables."}
    )
    forget_loss: str = field(default="teacher_others", metadata={"help": "Forget objective of the guard term (see ForgetConfig)."})
    forget_margin: float = field(default=2.0, metadata={"help": "Logit margin for forget_loss=margin."})

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.forget_loss not in losses.FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {losses.FORGET_LOSSES}, got {self.forget_loss!r}")


class _EMACallback(TrainerCallback):
    """Averages trainable weights after each optimiser step; swaps the average in when training ends."""

    def __init__(self, trainer: "RemindTrainer"):
        self.trainer = trainer
        self.params: list[torch.Tensor] = []
        self.ema: list[torch.Tensor] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.params = [p for p in self.trainer.model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]

    def on_step_end(self, args, state, control, **kwargs):
        ema_update(self.ema, [p.detach() for p in self.params], args.ema_decay)

    def on_train_end(self, args, state, control, **kwargs):
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)


class RemindTrainer(UnlearnTrainer):
    stage_name = "remind"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.ema_decay > 0:
            self.add_callback(_EMACallback(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        class_embeds, text_term = self.student_class_embeds(model)
        s, t = self.embed_batch(model, inputs, ["retain", "forget", "anchor", "proxy"])
        retain_labels = inputs["retain"]["labels"]
        terms = {"contrastive": a.contrastive_weight * losses.class_contrastive_loss(self.logits(s["retain"], class_embeds), retain_labels)}
        terms.update(self.distill_terms(s, t, class_embeds))
        if "forget" in s and a.forget_guard_weight:
            terms["forget_guard"] = a.forget_guard_weight * losses.forget_loss(
                a.forget_loss, s["forget"], self.logits(s["forget"], class_embeds), self.logits(t["forget"], self.class_embeds),
                class_embeds, inputs["forget"]["labels"], margin=a.forget_margin,
            )
        if text_term is not None and a.text_distill_weight:
            terms["embed_text"] = a.text_distill_weight * text_term
        loss = self.finish(terms)
        return (loss, s) if return_outputs else loss
