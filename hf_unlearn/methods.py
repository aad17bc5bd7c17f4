"""The baseline unlearning methods the benchmark compares against, and the grid each one is tuned over.

A ``Method`` says which Trainer and config run it, which stream its epochs walk (``primary``: the forget set
for methods driven by forgetting, the retain set for plain fine-tuning), and its hyperparameter search: every
learning rate in ``learning_rates`` crossed with every value of ``weight_field`` in ``weights``. The project's
own method (forget-remind-restore) is not listed here: the pipeline runs it.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

from .trainers.baselines import (
    CLIPEraseConfig, CLIPEraseTrainer, FTConfig, FTTrainer, GAConfig, GATrainer, NegGradPlusConfig, NegGradPlusTrainer,
    RLConfig, RLTrainer, SalUnConfig, SalUnTrainer, SCRUBConfig, SCRUBTrainer,
)

PRIMARY_STREAMS = ("forget", "retain")


@dataclass(frozen=True)
class Method:
    name: str
    trainer: type
    config: type
    primary: str
    weight_field: str | None
    learning_rates: tuple[float, ...]
    weights: tuple[float, ...] = ()
    needs_saliency: bool = False

    def __post_init__(self):
        if self.primary not in PRIMARY_STREAMS:
            raise ValueError(f"{self.name}: primary must be one of {PRIMARY_STREAMS}, got {self.primary!r}")
        if not self.learning_rates:
            raise ValueError(f"{self.name}: needs at least one learning rate")
        if (self.weight_field is None) != (not self.weights):
            raise ValueError(f"{self.name}: weights are given exactly when weight_field is")
        names = {f.name for f in dataclasses.fields(self.config)}
        if self.weight_field is not None and self.weight_field not in names:
            raise ValueError(f"{self.name}: {self.config.__name__} has no field {self.weight_field!r}")

    @property
    def doc(self) -> str:
        """What the method does and where it comes from (the trainer's docstring)."""
        return inspect.getdoc(self.trainer) or ""

    def grid(self) -> list[dict[str, float]]:
        """Every config override the search tries: learning rate x weight, learning rate outermost."""
        if self.weight_field is None:
            return [{"learning_rate": lr} for lr in self.learning_rates]
        return [{"learning_rate": lr, self.weight_field: w} for lr in self.learning_rates for w in self.weights]


# Full fine-tuning rates for AdamW on CLIP; the unbounded ascent methods get a 10x lower grid. CLIPErase's
# cosine term has gradients ~logit_scale smaller than the cross-entropy it is traded against, hence larger weights.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ga", GATrainer, GAConfig, "forget", None, (1e-6, 1e-5)),
        Method("neggrad_plus", NegGradPlusTrainer, NegGradPlusConfig, "forget", "forget_weight", (1e-6, 1e-5), (0.5, 1.0)),
        Method("ft", FTTrainer, FTConfig, "retain", None, (1e-5, 1e-4)),
        Method("rl", RLTrainer, RLConfig, "forget", "forget_weight", (1e-5, 1e-4), (0.5, 1.0)),
        Method("scrub", SCRUBTrainer, SCRUBConfig, "forget", "scrub_alpha", (1e-5, 1e-4), (0.5, 1.0)),
        Method("salun", SalUnTrainer, SalUnConfig, "forget", "forget_weight", (1e-5, 1e-4), (0.5, 1.0), needs_saliency=True),
        Method("clip_erase", CLIPEraseTrainer, CLIPEraseConfig, "forget", "forget_weight", (1e-5, 1e-4), (1.0, 10.0)),
    )
}
