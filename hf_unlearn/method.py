"""The method in its three steps (Zhang et al., CVPR 2025), each distilling from the frozen original:

1. ``forget``: LoRA adapters on the modules with the highest relative Fisher score push forget images off their
   class text, while retain / other-class / proxy images keep matching the teacher;
2. ``remind``: contrastive fine-tuning of the same modules on retain (and other-class) images with an EMA of the
   weights, a guard term keeping the subgroup forgotten;
3. ``restore``: ``theta = a * theta_unlearned + (1 - a) * theta_original``, ``a`` chosen on calibration data.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import torch
from transformers import TrainerCallback

from . import precision
from .checkpointing import stage_calibration
from .evaluation import EvalSet, embed_images, evaluate_sets
from .family import weights_folder
from .outputs import clear_final_files
from .run import Run, device
from .search import hp_search, search_alpha
from .selection import select_modules, weight_rms
from .soup import interpolate_state_dicts, load_checkpoint, soup_checkpoints
from .stages import fresh_student, set_trainable, stage_config, train_stage

logger = logging.getLogger("hf_unlearn")

# The search every method gets (learning rate x its main weight), here over the forget stage.
SEARCH_GRID = [{"learning_rate": lr, "forget_weight": w} for lr in (5e-4, 1e-3) for w in (1.0, 2.0)]


def stage_steps(args, groups, num_processes: int = 1) -> tuple[int, int]:
    """Optimiser steps of the forget and remind stages with these settings (the forget stage's at least
    ``--forget_min_steps``, each at most its ``--*_max_steps``; the forget stage's early stop may end it sooner)."""
    per_step = args.batch_size * num_processes
    forget = max(math.ceil(math.ceil(len(groups.train["forget"]) / per_step) * args.forget_epochs), args.forget_min_steps)
    if args.forget_max_steps:
        forget = min(forget, args.forget_max_steps)
    remind = 0 if args.no_remind else math.ceil(math.ceil(len(groups.train["retain"]) / per_step) * args.remind_epochs)
    if args.remind_max_steps:
        remind = min(remind, args.remind_max_steps)
    return forget, remind


def budget_steps(args, groups, num_processes: int = 1) -> int:
    """Optimiser steps of the method with these settings: every baseline gets exactly as many."""
    return sum(stage_steps(args, groups, num_processes))


class StopWhenForgotten(TrainerCallback):
    """Ends a forget stage once the student's calibration FA has been at or below ``threshold`` at two checks in a
    row, ``every`` steps apart; each check goes into the stage's log as ``forget/calibration_FA``."""

    def __init__(self, forget_accuracy: Callable, every: int, threshold: float, patience: int = 2):
        self.forget_accuracy, self.every, self.threshold, self.patience, self.streak = forget_accuracy, every, threshold, patience, 0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every:
            return
        fa = self.forget_accuracy(model)
        state.log_history.append({"forget/calibration_FA": fa, "step": state.global_step})
        self.streak = self.streak + 1 if fa <= self.threshold else 0
        if self.streak >= self.patience:
            logger.info("forget stage: calibration FA %.3f at step %d, the %d-th check in a row at or below %.3f: stopping",
                        fa, state.global_step, self.patience, self.threshold)
            control.should_training_stop = True


def early_stop(run: Run) -> StopWhenForgotten | None:
    """The forget stage's early stop on the run's calibration forget images (none with --forget_check_steps 0)."""
    args = run.args
    if not args.forget_check_steps:
        return None
    threshold = args.fa_target / 2 if args.forget_stop_fa is None else args.forget_stop_fa
    cal = run.groups.calibration
    only_forget = EvalSet(cal.name, cal.images.subset(cal.masks["forget"].nonzero().view(-1)), cal.class_names)
    return StopWhenForgotten(lambda m: evaluate_sets(m, run.tokenizer, [only_forget], run.train_templates)[f"ZS/{cal.name}"],
                             args.forget_check_steps, threshold)


def forget_targets(run: Run) -> torch.Tensor:
    """Where the image-side forget term pulls each forget training image: the teacher's embedding of its nearest
    other-class training image in the forget spec's context (every other-class image when none share it). One target
    per image, not a shared one: forget images collapsed onto one point would be easier for a probe to pick out."""
    other, in_context = run.groups.train["other"], run.groups.other_in_context
    if not bool(in_context.any()):
        logger.warning("no other-class training image shares the forget spec's context; the image-side forget term uses them all")
        in_context = torch.ones(len(other), dtype=torch.bool)
    if run.teacher_cache is not None and "other" in run.teacher_cache:
        with precision.autocast(device()):  # the trainer's autocast: the cache is filled as its steps would fill it
            forget_embeds, other_embeds = (run.teacher_cache.embeddings(n).cpu() for n in ("forget", "other"))
    else:
        forget_embeds, other_embeds = (embed_images(run.teacher, run.groups.train[n].pixel_values) for n in ("forget", "other"))
    candidates = other_embeds[in_context]
    return candidates[(forget_embeds @ candidates.T).argmax(-1)]


def with_lora(model, modules: list[str], r: int, alpha: int, dropout: float):
    """peft LoRA adapters on ``modules``. peft casts each adapter's input to the adapter's dtype; the weights stay
    float32 here (bf16 runs autocast), so under autocast that cast only sends bf16 activations through float32 and
    back: off, which makes a forget step 7-16 % faster on CPU and changes no value (docs/BENCHMARKS.md)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules))
    for layer in model.modules():
        if isinstance(layer, BaseTunerLayer):
            layer.cast_input_dtype_enabled = False
    return model


def forget(run: Run, base, modules: list[str], name: str, learning_rate: float, weight: float, epochs: float = 1.0, max_steps: int = -1,
           stop: StopWhenForgotten | None = None) -> str:
    """Step 1 on ``base()``: LoRA adapters on ``modules``, merged afterwards (with --no_lora the modules themselves);
    ``stop`` may end it before its epochs are done."""
    from .trainers import ForgetConfig, ForgetTrainer

    args = run.args
    lora = None if args.no_lora else {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout}

    def student():
        if lora is None:
            return set_trainable(base(), modules)
        return with_lora(base(), modules, args.lora_r, args.lora_alpha, args.lora_dropout)

    config = stage_config(ForgetConfig, run, name, learning_rate, epochs, max_steps, forget_weight=weight)
    spec = {"modules": modules, "lora": lora}
    if stop is not None:
        spec["stop"] = {"every": stop.every, "calibration_fa": stop.threshold, "patience": stop.patience}
    targets = forget_targets(run) if args.forget_image_weight else None
    return train_stage(run, name, ForgetTrainer, config, student, "forget", spec, after=None if lora is None else lambda m: m.merge_and_unload(),
                       trainer_kwargs=lambda _: {"forget_targets": targets}, callbacks=() if stop is None else (stop,))


def remind(run: Run, start: str, modules: list[str], name: str, max_steps: int = -1) -> str:
    """Step 2 on the weights in stage ``start``: EMA reminding of the modules the forget stage tuned."""
    from .trainers import RemindConfig, RemindTrainer

    args = run.args
    config = stage_config(RemindConfig, run, name, args.remind_learning_rate, args.remind_epochs, max_steps)
    return train_stage(run, name, RemindTrainer, config, lambda: set_trainable(run.load(run.stage_folder(start)), modules), "retain",
                       {"modules": modules, "starts_from": start})


def restore(run: Run, unlearned: str, alphas: list[float]) -> dict:
    """Step 3: choose the soup weight on calibration data, then stream the soup into the staging folder as a plain
    checkpoint. Both soup inputs are read from their safetensors files on the CPU, whatever device trained."""
    t0 = time.time()
    original = weights_folder(run.args.model_name_or_path)
    sd_u = load_checkpoint(unlearned)
    sd_o = {k: v for k, v in load_checkpoint(original).items() if k in sd_u}
    model = run.load(unlearned)
    # the soup at alpha 1 is the last stage's weights, whose calibration figures its record already holds
    last = stage_calibration(unlearned)

    def calibration_at(alpha: float) -> dict:
        if alpha == 1.0:
            return dict(last)
        model.load_state_dict(interpolate_state_dicts(sd_u, sd_o, alpha))
        return run.calibration(model)

    chosen, curve = search_alpha(calibration_at, alphas, run.args.fa_target, run.original_calibration,
                                 run.args.alpha_tolerance, run.args.retention_clip)
    if run.state.is_main_process:
        clear_final_files(run.staging)
        soup_checkpoints([unlearned, original], [chosen["alpha"], 1 - chosen["alpha"]], run.staging)
    run.state.wait_for_everyone()
    run.timings["restore_s"] = time.time() - t0
    logger.info("restore: alpha=%.2f (calibration FA %.3f)", chosen["alpha"], chosen["FA"])
    return {"alpha": chosen["alpha"], "fa_target": run.args.fa_target, "alpha_tolerance": run.args.alpha_tolerance,
            "retention_clip": run.args.retention_clip, "curve": curve,
            "original_calibration": run.original_calibration}


def search_candidate(run: Run, modules: list[str]):
    """``train(name, hyperparameters, steps)`` on a fresh copy of the original: the forget stage alone, or with
    ``--hp_search_remind`` forget then remind, the steps split between them as in the full run."""
    forget_steps, remind_steps = stage_steps(run.args, run.groups, run.state.num_processes)
    with_remind = run.args.hp_search_remind and not run.args.no_remind and remind_steps > 0

    def train(name: str, hp: dict, steps: int) -> str:
        n_forget = steps  # a one-step candidate cannot be split: it forgets
        if with_remind and steps >= 2:
            n_forget = min(steps - 1, max(1, round(steps * forget_steps / (forget_steps + remind_steps))))
        last = forget(run, lambda: fresh_student(run), modules, name, hp["learning_rate"], hp["forget_weight"], max_steps=n_forget)
        if n_forget < steps:
            last = remind(run, name, modules, f"{name}-remind", max_steps=steps - n_forget)
        return last

    return train


def forget_remind_restore(run: Run, model) -> dict:
    """The method on ``model``: module selection, the optional search, forget, remind; the restore comes after."""
    args = run.args
    t0 = time.time()
    modules, ranking = select_modules(args, model, run.groups, run.class_embeds, run.prompt_tokens)
    run.timings["selection_s"] = time.time() - t0
    logger.info("tuning %d modules: %s", len(modules), modules)
    hparams = {"learning_rate": args.forget_learning_rate, "forget_weight": args.forget_weight}
    if args.forget_relative_learning_rate:
        rms = weight_rms(model, modules)
        hparams.update(learning_rate=args.forget_relative_learning_rate * rms, relative_learning_rate=args.forget_relative_learning_rate,
                       weight_rms=rms)
        logger.info("forget rate %.3g: %g x the tuned weights' RMS %.4f", hparams["learning_rate"], args.forget_relative_learning_rate, rms)
    search = hp_search(run, search_candidate(run, modules), SEARCH_GRID, budget_steps(args, run.groups, run.state.num_processes)) if args.hp_search else None
    if search:
        hparams = search["chosen"]
    # the rate and weight trained with become the run's settings (and the report's), however they were chosen
    run.args = dataclasses.replace(args, forget_learning_rate=hparams["learning_rate"], forget_weight=hparams["forget_weight"])
    forget_steps, remind_steps = stage_steps(args, run.groups, run.state.num_processes)
    last = forget(run, lambda: model, modules, "forget", hparams["learning_rate"], hparams["forget_weight"], epochs=args.forget_epochs,
                  max_steps=forget_steps, stop=early_stop(run))
    stages = ["forget"]
    if not args.no_remind:
        last = remind(run, "forget", modules, "remind", max_steps=remind_steps)
        stages.append("remind")
    return {"last": last, "stages": stages, "modules": modules, "ranking": ranking, "hyperparameters": hparams, "search": search}
