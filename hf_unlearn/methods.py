"""The baseline unlearning methods the benchmark compares against, the grid each one is tuned over, and how the
pipeline runs one (``run_baseline``): the same groups, step budget and evaluation as the method.

A ``Method`` says which Trainer and config run it, which stream its epochs walk (``primary``: the forget set
for methods driven by forgetting, the retain set for plain fine-tuning), and its hyperparameter search: every
learning rate in ``learning_rates`` crossed with every value of ``weight_field`` in ``weights``. The project's
own method (forget-remind-restore) is not listed here: ``method.py`` runs it.
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


def baseline_hyperparameters(args, method: Method) -> dict:
    """A baseline's learning rate and main weight without a search: the flags, else the top of its grid and the
    weight's setting."""
    out = {"learning_rate": args.baseline_learning_rate or method.learning_rates[-1]}
    if method.weight_field:
        out[method.weight_field] = args.baseline_weight if args.baseline_weight is not None else getattr(args, method.weight_field)
    return out


def baseline_candidate(run, method: Method, modules: list[str]):
    """``train(name, hyperparameters, steps) -> stage folder`` for one baseline, fully fine-tuning ``modules``."""
    from .stages import fresh_student, set_trainable, stage_config, train_stage
    from .trainers.baselines import saliency_mask

    def train(name: str, hp: dict, steps: int) -> str:
        extra = {k: v for k, v in hp.items() if k != "learning_rate"}
        config = stage_config(method.config, run, name, hp["learning_rate"], 1.0, max_steps=steps, **extra)

        def kwargs(model):
            if not method.needs_saliency:
                return {}
            f = run.groups.train["forget"]
            n = min(len(f), 4 * run.args.fisher_samples)
            return {"saliency_mask": saliency_mask(model, f.pixel_values[:n], f.labels[:n], run.class_embeds, run.logit_scale,
                                                   fraction=config.saliency_fraction)}

        return train_stage(run, name, method.trainer, config, lambda: set_trainable(fresh_student(run), modules), method.primary,
                           {"modules": modules}, trainer_kwargs=kwargs)

    return train


def run_baseline(run, model) -> dict:
    """A baseline on the method's step budget, fine-tuning every module of --selection_scope; no restore step."""
    from .method import budget_steps
    from .search import hp_search
    from .selection import candidate_modules

    method = METHODS[run.args.method]
    modules = candidate_modules(model, run.args.selection_scope)
    budget = budget_steps(run.args, run.groups, run.state.num_processes)
    train = baseline_candidate(run, method, modules)
    search = hp_search(run, train, method.grid(), budget) if run.args.hp_search else None
    hparams = search["chosen"] if search else baseline_hyperparameters(run.args, method)
    return {"last": train(method.name, hparams, budget), "stages": [method.name], "modules": modules, "ranking": [],
            "hyperparameters": hparams, "search": search}
