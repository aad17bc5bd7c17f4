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


class TeacherCache:
    """The frozen teacher's unit-norm image embeddings of each fixed training stream (forget / retain / other and the
    proxy pool), each computed on first use and then looked up by row: the teacher never runs twice on the same
    un-augmented image in a run (TRL's ``precompute_ref_log_probs`` does the same for a reference model)."""

    def __init__(self, teacher: torch.nn.Module, streams: dict):
        self.teacher, self.streams, self._embeds = teacher, streams, {}

    def __contains__(self, name: str) -> bool:
        return name in self.streams

    @torch.no_grad()
    def embeddings(self, name: str) -> torch.Tensor:
        """Computed under the caller's autocast (the trainer's), so cached and live teacher outputs match."""
        if name not in self._embeds:
            from .prompts import encode_images, inference_batch_size

            device, pixels = next(self.teacher.parameters()).device, self.streams[name].pixel_values
            batch_size = inference_batch_size(device)
            self._embeds[name] = torch.cat([encode_images(self.teacher, pixels[i : i + batch_size].to(device)) for i in range(0, len(pixels), batch_size)])
        return self._embeds[name]

    def lookup(self, name: str, index: torch.Tensor) -> torch.Tensor:
        embeds = self.embeddings(name)
        return embeds[index.to(embeds.device)].to(index.device)
