"""Stage 2, remind: repair over-forgetting of the siblings with CLIP's contrastive loss, keeping an EMA of weights."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from ..config import ForgetObjective, RemindObjective
from .base import UnlearnConfig, UnlearnTrainer, saved_checkpoint


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * params, in place."""
    torch._foreach_lerp_(ema, params, 1.0 - decay)


@dataclass
class RemindConfig(RemindObjective, ForgetObjective, UnlearnConfig):
    """The remind stage's settings: contrastive reminding with an EMA (``RemindObjective``), the forget guard's
    objective (``ForgetObjective``, the same as the forget stage's) and distillation."""


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
    reads_proxies = True

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
        guard = "forget" in inputs and a.forget_guard_weight > 0
        s, t, class_embeds, text_term = self.embed_batch(model, inputs, ["retain", "forget", "other", "proxy"], self.needs_teacher(forget_term=guard))
        retain_labels = inputs["retain"]["labels"]
        terms = {"contrastive": a.contrastive_weight * self.keep_loss(model, self.logits(s["retain"], class_embeds), retain_labels)}
        if "other" in s and a.other_contrastive_weight:
            terms["contrastive_other"] = a.other_contrastive_weight * self.keep_loss(
                model, self.logits(s["other"], class_embeds), inputs["other"]["labels"]
            )
        terms.update(self.distill_terms(s, t, class_embeds))
        if guard:
            terms["forget_guard"] = a.forget_guard_weight * self.forget_term(s, t, class_embeds, inputs["forget"]["labels"])
        if text_term is not None and a.text_distill_weight:
            terms["embed_text"] = a.text_distill_weight * text_term
        loss = self.total_loss(terms)
        return (loss, s) if return_outputs else loss
