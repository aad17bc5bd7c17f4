"""Training one stage: its config from the run's settings, and ``train_stage``, which trains it with its Trainer
subclass (or reuses it when finished, or resumes it from its last checkpoint), saves it atomically and logs the
calibration FA / RA / OA of what it hands on. The method (``method.py``) and the baselines (``methods.py``) use both.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable

import torch
from transformers import TrainingArguments
from transformers.trainer_callback import ProgressCallback

from . import checkpointing as ckpt
from . import precision
from .config import DISTILL_WEIGHTS
from .data import IndexDataset, UnlearningCollator
from .run import Run

_TRAINING_ARGS = {f.name for f in dataclasses.fields(TrainingArguments)}


def stage_config(cls, run: Run, name: str, learning_rate: float, epochs: float = 1.0, max_steps: int = -1, **overrides):
    """The ``cls`` config of stage ``name``: every setting its groups declare comes from the run's arguments (the
    distillation weights are 0 under ``--no_distill``), ``overrides`` (a search candidate's) win."""
    args = run.args
    own = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in _TRAINING_ARGS and hasattr(args, f.name)}
    if args.no_distill:
        own.update(dict.fromkeys(DISTILL_WEIGHTS, 0.0))
    use_cpu = not torch.cuda.is_available()
    save = dict(save_strategy="steps", save_steps=args.save_steps, save_total_limit=1) if args.save_steps else dict(save_strategy="no")
    return cls(
        output_dir=run.stage_folder(f"{name}-run"), learning_rate=learning_rate, num_train_epochs=epochs, max_steps=max_steps,
        per_device_train_batch_size=args.batch_size, seed=args.seed, data_seed=args.seed, logging_steps=args.logging_steps,
        report_to=args.report_to, lr_scheduler_type="cosine", warmup_steps=0.1, weight_decay=0.0, disable_tqdm=False,
        use_cpu=use_cpu, bf16=precision.use_bf16(args.precision, "cpu" if use_cpu else "cuda"), ddp_find_unused_parameters=False,
        **save, **{**own, **overrides},
    )


def stage_collator(run: Run, trainer_cls, config, primary: str) -> UnlearningCollator:
    """The stage's batches: proxies only for a trainer that reads them (so a baseline's other-class stream is never
    halved by ``--alternate_other_proxy``) and whose proxy weight is above 0."""
    proxy = trainer_cls.reads_proxies and (config.proxy_weight > 0 or getattr(config, "proxy_vocab_kd_weight", 0) > 0)
    return UnlearningCollator(primary, run.groups.train, proxy=proxy, seed=run.args.seed, augment=run.args.augment,
                              alternate_other_proxy=run.args.alternate_other_proxy)


def set_trainable(model, modules: list[str]):
    model.requires_grad_(False)
    named = dict(model.named_modules())
    for m in modules:
        named[m].requires_grad_(True)
    return model


def fresh_student(run: Run):
    """A trainable copy of the original, so search candidates never share weights."""
    student = copy.deepcopy(run.original_model)
    student.requires_grad_(True)
    return student.train()


class _StageProgress(ProgressCallback):
    """The Trainer's progress bar, labelled with the stage it trains."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(f"{self.name} stage")


def _close_writers(trainer) -> None:
    """Flush logging backends that the post-training log reopened (their on_train_end already ran)."""
    for cb in trainer.callback_handler.callbacks:
        writer = getattr(cb, "tb_writer", None)
        if writer is not None:
            writer.close()
            cb.tb_writer = None


def train_stage(run: Run, name: str, trainer_cls, config, make_student: Callable, primary: str, student_spec: dict,
                after: Callable | None = None, trainer_kwargs: Callable | None = None, callbacks: tuple = ()) -> str:
    """Train stage ``name`` (or reuse it if finished; resume it if interrupted and asked) and save it atomically.

    ``make_student()`` builds the model to train; ``after(student)`` turns it into the plain model to save (e.g.
    merging LoRA adapters); ``trainer_kwargs(student)`` adds method-specific Trainer arguments; ``student_spec``
    describes how the student is built, for the recorded settings; ``callbacks`` are added to the Trainer. Returns the
    stage folder.
    """
    t0 = time.time()
    folder, run_dir = run.stage_folder(name), config.output_dir
    settings = ckpt.stage_settings(trainer_cls, config, {k: getattr(run.args, k) for k in ckpt.INPUT_KEYS}, student_spec)
    done = ckpt.finished_stage(folder)
    if done is not None:  # reused from an earlier run: the time it took then, not the seconds it takes to find it
        ckpt.check_reusable(folder, done["settings"], settings)
        run.timings[f"{name}_s"] = done["seconds"]
        return folder
    resume = ckpt.resume_point(run_dir, run.args.resume_from_checkpoint, run.state)
    before = ckpt.checkpoint_state(resume)
    if resume:
        ckpt.check_reusable(resume, before["settings"], settings, interrupted=True)
    t0 -= before.get("seconds", 0.0)
    student = make_student()
    collator = stage_collator(run, trainer_cls, config, primary)
    trainer = trainer_cls(
        model=student, args=config, train_dataset=IndexDataset(len(run.groups.train[primary])), data_collator=collator,
        processing_class=run.processor, teacher=run.teacher, class_embeds=run.class_embeds, prompt_tokens=run.prompt_tokens,
        n_templates=len(run.train_templates), teacher_cache=run.teacher_cache, phrasing_heads=run.phrasing_heads,
        vocab_embeds=run.vocab_embeds,
        **(trainer_kwargs(student) if trainer_kwargs else {}),
    )
    trainer.add_callback(ckpt.StageStateCallback(t0, settings))
    for callback in callbacks:
        trainer.add_callback(callback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_StageProgress(name))
    result = trainer.train(resume_from_checkpoint=resume)
    final = after(student) if after else student
    calibration = {f"calibration/{k}": v for k, v in run.calibration(final).items()}
    trainer.log(dict(calibration))  # FA / RA / OA of what this stage hands on, to every report_to backend
    _close_writers(trainer)
    if run.state.is_main_process:
        record = {"stage": name, "settings": settings, "train_loss": result.training_loss, "steps": result.global_step,
                  "seconds": time.time() - t0, "calibration": calibration, "log": trainer.state.log_history}
        ckpt.save_stage(final, run.processor, folder, record)
        ckpt.clear_run_dir(run_dir)
    run.state.wait_for_everyone()
    run.timings[f"{name}_s"] = time.time() - t0
    return folder
