"""Loss functions, pure: tensors in, scalar tensor out; no model, no I/O.

Conventions: ``image_embeds`` and ``text_embeds`` are unit-norm; ``logits`` are scaled cosine similarities of
images against a class prompt bank (``[batch, num_classes]``); ``labels`` index that bank.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import FORGET_LOSSES


def class_logits(image_embeds: torch.Tensor, class_embeds: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    return logit_scale * image_embeds @ class_embeds.t()


# ---- forgetting -------------------------------------------------------------------------------------------

def phrasing_recognition(image_embeds: torch.Tensor, heads: torch.Tensor, labels: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    """Per phrasing's class head (``heads``: ``[N, C, dim]``), the mean probability the images' true class gets among
    the classes: how much each phrasing still recognises them (``[N]``)."""
    logits = logit_scale * torch.einsum("bd,ncd->nbc", image_embeds.float(), heads.float())
    return logits.softmax(-1).gather(-1, labels.view(1, -1, 1).expand(len(heads), -1, 1)).squeeze(-1).mean(-1)


def forget_similarity_loss(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's objective: the mean cosine similarity of forget images to their own class text (minimised)."""
    return (image_embeds * class_embeds[labels]).sum(-1).mean()


def forget_margin_loss(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Hinge that makes the true class lose to the best other class by ``margin`` logits, then stops pushing."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return F.relu(true - others + margin).mean()


def forget_teacher_others_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Cross-entropy toward the teacher's own belief among the *other* classes (true class masked out).

    A forgotten sketch of a dog should look like what the original model would have called it had dogs not
    existed, which is also what a model retrained without the subgroup tends to predict.
    """
    mask = F.one_hot(labels, teacher_logits.shape[1]).bool()
    target = F.softmax(teacher_logits.masked_fill(mask, float("-inf")) / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def forget_loss(kind: str, student_embeds, student_logits, teacher_logits, class_embeds, labels, margin=1.0, temperature=1.0):
    if kind == "similarity":
        return forget_similarity_loss(student_embeds, class_embeds, labels)
    if kind == "margin":
        return forget_margin_loss(student_logits, labels, margin)
    if kind == "teacher_others":
        return forget_teacher_others_loss(student_logits, teacher_logits, labels, temperature)
    raise ValueError(f"unknown forget loss {kind!r}; choices: {', '.join(FORGET_LOSSES)}")


# ---- keeping ----------------------------------------------------------------------------------------------

def class_contrastive_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CLIP's image-to-text contrastive loss against the class prompt bank (cross-entropy on the true prompt)."""
    return F.cross_entropy(logits, labels)


def class_sigmoid_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss against the class prompt bank: each (image, class) pair is a binary
    match / no-match decision; ``logits`` already include SigLIP's learned bias. Averaged over images."""
    target = 2 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1
    return -F.logsigmoid(target * logits).sum(-1).mean()


def kd_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) on softened class distributions, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1), log_target=True, reduction="batchmean") * t * t


def embedding_distill_loss(student_embeds: torch.Tensor, teacher_embeds: torch.Tensor) -> torch.Tensor:
    """1 - cosine between student and teacher embeddings: keeps the whole embedding, not just class logits."""
    return (1 - F.cosine_similarity(student_embeds, teacher_embeds, dim=-1)).mean()


# ---- baselines --------------------------------------------------------------------------------------------
# The forget-side terms of the baselines use softmax cross-entropy over the class bank: the classification
# loss those papers ascend or relabel. It ignores SigLIP's bias (softmax is shift-invariant), so it applies
# to either family; the retain side uses the family's own keep-loss (see ``family.keep_loss``).

def gradient_ascent_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent (GA; Thudi et al. 2022, "Unrolling SGD"; Golatkar et al. 2020): minus the forget
    cross-entropy, so minimising it raises the forget CE. Unbounded below: the step count and rate bound it."""
    return -F.cross_entropy(logits, labels)


def random_other_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label a uniformly random *different* class (Random Labels, Golatkar et al. 2020; SalUn).

    Draws on the generator's device (CPU for a default generator), so the result depends only on its seed;
    it is returned on ``labels``' device.
    """
    if num_classes < 2:
        raise ValueError(f"random other labels need at least 2 classes, got {num_classes}")
    draw = torch.randint(num_classes - 1, labels.shape, generator=generator, device=generator.device)
    cpu_labels = labels.to(draw.device)
    return (draw + (draw >= cpu_labels).long()).to(labels.device)  # skip over the true class


def random_label_loss(logits: torch.Tensor, random_labels: torch.Tensor) -> torch.Tensor:
    """Random-label fine-tuning (RL; Golatkar et al. 2020, used by SalUn, Fan et al. ICLR 2024): cross-entropy
    toward given wrong labels, so forget images are pulled to other classes rather than just away from theirs."""
    return F.cross_entropy(logits, random_labels)


def scrub_max_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """SCRUB's max step (Kurmanji et al. NeurIPS 2023, "Towards Unbounded Machine Unlearning"): minus
    KL(teacher || student) on forget images, so minimising it moves the student away from the original.
    Its gradient is zero while student == teacher; the min steps and any noise break that tie."""
    return -kd_logit_loss(student_logits, teacher_logits, temperature)


def clip_erase_forget_loss(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CLIPErase's forgetting module (Yang et al. 2024, "CLIPErase: Efficient Unlearning of Visual-Textual
    Associations in CLIP"): decouple forget images from their class text by minimising their cosine similarity.
    The same quantity as ``forget_similarity_loss``; named here so the baseline states its source."""
    return forget_similarity_loss(image_embeds, class_embeds, labels)
