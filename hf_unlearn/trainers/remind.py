"""Stage 2, remind: repair over-forgetting of the siblings with CLIP's contrastive loss, keeping an EMA of weights."""
from __future__ import annotations

from dataclasses import dataclass, field

import os

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from .. import losses
from .base import UnlearnConfig, UnlearnTrainer, saved_checkpoint


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * params, in place."""
    torch._foreach_lerp_(ema, params, 1.0 - decay)


@dataclass
class RemindConfig(UnlearnConfig):
    ema_decay: float = field(default=0.9, metadata={"help": "EMA decay of the weights (0 disables the EMA: the last weights are saved)."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Weight of the contrastive loss on retain image / class text."})
    anchor_contrastive_weight: float = field(
        default=3.0,
        metadata={"help": "Weight of the same contrastive loss on other-class (anchor) images, so reminding the forget "
                  "class's siblings does not make other classes' images drift toward that class; 0 disables."},
    )
    forget_guard_weight: float = field(
        default=3.0, metadata={"help": "Weight of a forget term on forget images, so reminding does not bring the subgroup back; 0 disables."}
    )
    forget_loss: str = field(default="teacher_others", metadata={"help": "Forget objective of the guard term (see ForgetConfig)."})
    forget_margin: float = field(default=2.0, metadata={"help": "Logit margin for forget_loss=margin."})

    def __post_init__(self):
        super().__post_init__()
        if self.anchor_contrastive_weight < 0:
            raise ValueError(f"anchor_contrastive_weight must be >= 0, got {self.anchor_contrastive_weight}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.forget_loss not in losses.FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {losses.FORGET_LOSSES}, got {self.forget_loss!r}")


EMA_FILE = "ema_state.safetensors"


class _EMACallback(TrainerCallback):
    """Averages trainable weights after each optimiser step; swaps the average in when training ends.

    The average is part of the training state: it is written next to every Trainer checkpoint and read back
    on resume, so an interrupted remind stage ends with the same weights as an uninterrupted one.
    """

    def __init__(self, trainer: "RemindTrainer"):
        self.trainer = trainer
        self.params: list[torch.Tensor] = []
        self.ema: list[torch.Tensor] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.params = [p for p in self.trainer.model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        resume = self.trainer.resumed_from
        if resume:
            saved = load_file(os.path.join(resume, EMA_FILE))
            if len(saved) != len(self.ema):
                raise ValueError(f"{resume}: EMA state has {len(saved)} tensors, the model trains {len(self.ema)}")
            for i, e in enumerate(self.ema):
                e.copy_(saved[str(i)])

    def on_step_end(self, args, state, control, **kwargs):
        ema_update(self.ema, [p.detach() for p in self.params], args.ema_decay)

    def on_save(self, args, state, control, **kwargs):
        folder = saved_checkpoint(args, state)
        if folder:
            save_file({str(i): e.contiguous() for i, e in enumerate(self.ema)}, os.path.join(folder, EMA_FILE))

    def on_train_end(self, args, state, control, **kwargs):
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)


class RemindTrainer(UnlearnTrainer):
    stage_name = "remind"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resumed_from: str | None = None
        if self.args.ema_decay > 0:
            self.add_callback(_EMACallback(self))

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        self.resumed_from = resume_from_checkpoint or None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        s, t, class_embeds, text_term = self.embed_batch(model, inputs, ["retain", "forget", "anchor", "proxy"])
        retain_labels = inputs["retain"]["labels"]
        terms = {"contrastive": a.contrastive_weight * self.keep_loss(model, self.logits(s["retain"], class_embeds), retain_labels)}
        if "anchor" in s and a.anchor_contrastive_weight:
            terms["contrastive_anchor"] = a.anchor_contrastive_weight * self.keep_loss(
                model, self.logits(s["anchor"], class_embeds), inputs["anchor"]["labels"]
            )
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
