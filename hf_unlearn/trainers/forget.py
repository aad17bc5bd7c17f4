"""Stage 1, forget: push forget images off their class text while distilling everything else from the teacher."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import losses
from ..config import ForgetImageObjective, ForgetObjective, ForgetWeight, TamperObjective
from ..prompts import encode_images
from .base import UnlearnConfig, UnlearnTrainer, is_text_side


@dataclass
class ForgetConfig(TamperObjective, ForgetImageObjective, ForgetWeight, ForgetObjective, UnlearnConfig):
    """The forget stage's settings: the forget term (``ForgetObjective``, ``ForgetWeight``), its image-side term
    (``ForgetImageObjective``), its tamper-resistance term (``TamperObjective``) and distillation."""


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

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.args.tamper_weight:
            return super().training_step(model, inputs, num_items_in_batch)
        inputs = self._prepare_inputs(inputs)  # once: the Trainer's own call is then a no-op on tensors already moved
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._terms["tamper"].append(self.tamper_gradient(model, inputs))
        return loss

    def attack_parameters(self, model) -> list[torch.nn.Parameter]:
        """What the simulated attacker fine-tunes: every parameter of the image side (the class text stays the teacher's)."""
        return [p for n, p in self.unwrap(model).named_parameters() if not is_text_side(n) and "logit_" not in n]

    def tamper_gradient(self, model, inputs) -> float:
        """Add to the trainable parameters' gradients the first-order gradient of the tamper-resistance term, and leave
        every weight as it was: a simulated attacker takes ``tamper_steps`` Adam steps on the image side toward the class
        text of half the forget stream (and as many retain images); the forget term is then taken on the other half at the
        attacked weights, so the stage learns weights from which a short fine-tune does not bring the subgroup back."""
        a, m = self.args, self.unwrap(model)
        trainable = [p for p in m.parameters() if p.requires_grad]
        attacked = self.attack_parameters(model)
        kept_grads, flags = [p.grad for p in trainable], [p.requires_grad for p in attacked]
        snapshot = [p.detach().clone() for p in attacked]
        forget, retain = inputs["forget"], inputs.get("retain")
        half = max(1, len(forget["labels"]) // 2)
        held = slice(half, None) if len(forget["labels"]) > 1 else slice(None)
        streams = [forget, retain] if retain else [forget]
        pixels = torch.cat([x["pixel_values"][:half] for x in streams])
        labels = torch.cat([x["labels"][:half] for x in streams])
        for p in m.parameters():
            p.grad = None
        for p in attacked:
            p.requires_grad_(True)
        attacker = torch.optim.Adam(attacked, lr=a.tamper_learning_rate)
        for _ in range(a.tamper_steps):
            with self.accelerator.autocast():
                logits = self.logits(encode_images(m, pixels), self.class_embeds)
            attacker.zero_grad(set_to_none=True)
            self.keep_loss(model, logits, labels).backward()
            attacker.step()
        attacker.zero_grad(set_to_none=True)
        held_inputs = {"forget": {k: v[held] for k, v in forget.items()}}
        with self.accelerator.autocast():
            s = {"forget": encode_images(m, held_inputs["forget"]["pixel_values"])}
            t = {"forget": self._teacher_embeds(held_inputs, ["forget"], held_inputs["forget"]["pixel_values"])} if self.needs_teacher(forget_term=True) else {}
        term = self.forget_term(s, t, self.class_embeds, held_inputs["forget"]["labels"])
        (a.tamper_weight * term).backward()
        with torch.no_grad():
            for p, w in zip(attacked, snapshot):
                p.copy_(w)
        for p, flag in zip(attacked, flags):
            p.requires_grad_(flag)
        for p, kept in zip(trainable, kept_grads):
            g = p.grad
            if g is not None and self.accelerator.num_processes > 1:
                g = self.accelerator.reduce(g, reduction="mean")
            p.grad = kept if g is None else (g if kept is None else kept + g)
        for p in m.parameters():
            if not p.requires_grad:
                p.grad = None
        return float(term.detach())
