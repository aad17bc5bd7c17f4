"""The frozen original model: the distillation teacher for every stage."""
from __future__ import annotations

import copy

import torch


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy with no grad and dropout off; it must never change while the student trains."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def prepare_teacher(accelerator, teacher: torch.nn.Module) -> torch.nn.Module:
    """Place the teacher for this process without wrapping it for gradient sync (evaluation mode)."""
    teacher = accelerator.prepare_model(teacher, evaluation_mode=True)
    teacher.eval()
    return teacher
