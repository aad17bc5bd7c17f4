"""The training stages and how they run: checkpointed, resumable, logged; the method and the baselines.

``StageRunner.stage`` trains one stage with a Trainer subclass (or reuses it when finished, or resumes it from its
last checkpoint), saves it atomically and logs its calibration FA / RA / OA. ``forget_remind`` is this project's
method; ``baseline_candidate`` runs any method of ``methods.METHODS`` on the same data and step budget;
``search`` is the calibration-scored hyperparameter search every method gets.
"""
from __future__ import annotations

import copy
import dataclasses
import glob
import json
import logging
import math
import os
import shutil
import time

import torch
from accelerate import PartialState
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from . import precision
from .config import UnlearnArguments
from .data import IndexDataset, UnlearningCollator
from .evaluation import composite_score, evaluate_sets
from .progress import progress
from .selection import candidate_modules, relative_fisher_scores, select_top
from .trainers.base import saved_checkpoint

logger = logging.getLogger("hf_unlearn")

COMPLETE = "stage_complete.json"

def _stage_args(cls, args: UnlearnArguments, out: str, lr: float, epochs: float, **extra):
    use_cpu = not torch.cuda.is_available()
    distill = dict(retain_kd_weight=args.retain_kd_weight, anchor_kd_weight=args.anchor_kd_weight,
                   embed_distill_weight=args.embed_distill_weight, proxy_weight=args.proxy_weight)
    if args.no_distill:
        distill = {k: 0.0 for k in distill}
    save = dict(save_strategy="steps", save_steps=args.save_steps, save_total_limit=1) if args.save_steps else dict(save_strategy="no")
    return cls(
        output_dir=out, learning_rate=lr, num_train_epochs=epochs, per_device_train_batch_size=args.batch_size,
        seed=args.seed, data_seed=args.seed, logging_steps=args.logging_steps, report_to=args.report_to, **save,
        lr_scheduler_type="cosine", warmup_steps=0.1, weight_decay=0.0, disable_tqdm=False, use_cpu=use_cpu,
        bf16=precision.resolve(args.precision, "cpu" if use_cpu else "cuda"), ddp_find_unused_parameters=False, **distill, **extra,
    )


def _save_stage(model, processor, folder: str, info: dict) -> None:
    """Write a finished stage atomically: a stage folder is either complete or absent."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    with open(os.path.join(tmp, COMPLETE), "w") as f:
        json.dump(info, f, indent=2)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def stage_done(folder: str) -> dict | None:
    path = os.path.join(folder, COMPLETE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


# TrainingArguments that change what a stage trains (the rest are logging, devices, saving, ...)
_TRAINING_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                  "seed", "data_seed", "lr_scheduler_type", "warmup_steps", "weight_decay")


# Run arguments every stage depends on (model, data, prompts, precision): a stage folder left by a run on other
# inputs must not be handed on, even if its trainer's own settings match.
_INPUT_KEYS = ("model_name_or_path", "dataset", "forget", "retain", "attributes", "class_column", "train_split",
               "calibration_fraction", "max_calibration", "max_other", "max_forget", "max_retain", "train_templates",
               "augment", "precision")


def stage_settings(trainer_cls, stage_args, inputs: dict | None = None, student_spec: dict | None = None) -> dict:
    """What a stage is trained with: its trainer, its config's own fields, the TrainingArguments above, the run's
    ``inputs`` and how its student was built (``student_spec``: tuned modules, LoRA shape, the stage it starts from)."""
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    keys = [f.name for f in dataclasses.fields(stage_args) if f.name not in base] + list(_TRAINING_KEYS)
    out = {"trainer": trainer_cls.__name__, **{k: getattr(stage_args, k) for k in keys}}
    if inputs is not None:
        out["inputs"] = inputs
    if student_spec is not None:
        out["student"] = student_spec
    return json.loads(json.dumps(out, default=str))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_reusable(folder: str, recorded: dict | None, settings: dict, interrupted: bool = False) -> None:
    """A finished stage is reused (an ``interrupted`` one's checkpoint resumed) only if it was trained with these
    settings; otherwise it would silently hand on a model the current arguments did not ask for."""
    if recorded is None:  # written before settings were recorded: nothing to compare
        return
    # groups added later ("inputs", "student") are compared only where the record has them
    settings = {k: v for k, v in settings.items() if k in recorded or k not in ("inputs", "student")}
    old, new = _flatten(recorded), _flatten(settings)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        what, fix = (("an interrupted stage's checkpoint", "rerun without --resume_from_checkpoint to start that stage over")
                     if interrupted else ("a finished stage", "delete that stage folder to retrain it"))
        raise ValueError(f"{folder} is {what} trained with other settings ({shown}{more}); use a new --output_dir, or {fix}")


def _set_trainable(model, modules: list[str]) -> None:
    model.requires_grad_(False)
    named = dict(model.named_modules())
    for m in modules:
        named[m].requires_grad_(True)


def _resume_point(run_dir: str, resume: bool, state: PartialState) -> str | None:
    """The last Trainer checkpoint of an interrupted stage, if asked to resume; otherwise start the stage clean."""
    last = get_last_checkpoint(run_dir) if os.path.isdir(run_dir) else None
    if resume:
        if last:
            logger.info("resuming %s from %s", os.path.basename(run_dir), last)
        return last
    if last:
        logger.warning("%s holds checkpoints of an interrupted stage; starting it over (pass --resume_from_checkpoint to continue it)", run_dir)
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.rmtree(run_dir, ignore_errors=True)
    state.wait_for_everyone()
    return None


STATE_FILE = "stage_state.json"


class _StageStateCallback(TrainerCallback):
    """Writes the stage's settings and seconds so far next to every Trainer checkpoint, so a resume can refuse a
    checkpoint trained with other settings and a resumed stage reports its whole training time."""

    def __init__(self, start: float, settings: dict):
        self.start, self.settings = start, settings

    def on_save(self, args, state, control, **kwargs):
        folder = saved_checkpoint(args, state)
        if folder:
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump({"seconds": time.time() - self.start, "settings": self.settings}, f)


def _checkpoint_state(checkpoint: str | None) -> dict:
    path = os.path.join(checkpoint, STATE_FILE) if checkpoint else ""
    if not os.path.exists(path):  # a fresh stage, or a checkpoint written before this was recorded
        return {}
    with open(path) as f:
        return json.load(f)


def _close_writers(trainer) -> None:
    """Flush logging backends that the post-training log above reopened (their on_train_end already ran)."""
    for cb in trainer.callback_handler.callbacks:
        writer = getattr(cb, "tb_writer", None)
        if writer is not None:
            writer.close()
            cb.tb_writer = None


class StageRunner:
    """What every stage of one run shares: the models, data, prompts and where things are written."""

    def __init__(self, args, state, staging, processor, teacher, data, tokens, class_embeds, n_templates, attn, model_cls, train_templates):
        self.args, self.state, self.staging, self.processor, self.teacher = args, state, staging, processor, teacher
        self.data, self.tokens, self.class_embeds, self.n_templates = data, tokens, class_embeds, n_templates
        self.attn, self.model_cls, self.train_templates = attn, model_cls, train_templates
        self.timings: dict[str, float] = {}
        self.logit_scale = float(teacher.logit_scale.exp())
        self.original_calib: dict = {}
        self.inputs = {k: getattr(args, k) for k in _INPUT_KEYS}  # made JSON-safe with the rest by stage_settings
        parts = data["parts"]
        self.streams = {"forget": parts["forget"], "retain": parts["retain"], "anchor": parts["other"]}

    def accelerator_free_teacher(self):
        return getattr(self.teacher, "module", self.teacher)

    def calibration(self, model) -> dict:
        return evaluate_sets(model, self.processor.tokenizer, [self.data["calibration"]], self.train_templates)

    def stage(self, name: str, trainer_cls, stage_args, make_student, primary: str, after=None, trainer_kwargs=None,
              student_spec: dict | None = None) -> str:
        """Train one stage (or reuse it if finished; resume it if interrupted and asked), save it atomically.

        ``make_student()`` builds the model to train; ``after(student)`` turns it into the plain model to save
        (e.g. merging LoRA adapters); ``trainer_kwargs(student)`` adds method-specific Trainer arguments; ``student_spec``
        describes how the model is built, for the recorded settings. Calibration FA / RA / OA of the saved model go to
        the Trainer's log.
        """
        t0 = time.time()
        folder = os.path.join(self.staging, "stages", name)
        run_dir = os.path.join(self.staging, "stages", f"{name}-run")
        done = stage_done(folder)
        settings = stage_settings(trainer_cls, stage_args, self.inputs, student_spec)
        if done is not None:
            check_reusable(folder, done.get("settings"), settings)
        if done is None:
            resume = _resume_point(run_dir, self.args.resume_from_checkpoint, self.state)
            before = _checkpoint_state(resume)
            check_reusable(resume, before.get("settings"), settings, interrupted=True)
            t0 -= before.get("seconds", 0.0)
            student = make_student()
            collator = UnlearningCollator(primary, self.streams, proxy=self.args.proxy_weight > 0 and not self.args.no_distill,
                                          seed=self.args.seed, augment=self.args.augment)
            trainer = trainer_cls(
                model=student, args=stage_args, train_dataset=IndexDataset(len(self.streams[primary])), data_collator=collator,
                processing_class=self.processor, teacher=self.teacher, class_embeds=self.class_embeds, prompt_tokens=self.tokens,
                n_templates=self.n_templates, **(trainer_kwargs(student) if trainer_kwargs else {}),
            )
            trainer.add_callback(_StageStateCallback(t0, settings))
            result = trainer.train(resume_from_checkpoint=resume)
            final = after(student) if after else student
            calib = {f"calibration/{k}": v for k, v in self.calibration(final).items()}
            trainer.log(dict(calib))  # FA / RA / OA of what this stage hands on, to every report_to backend
            _close_writers(trainer)
            if self.state.is_main_process:
                _save_stage(final, self.processor, folder, {"stage": name, "settings": settings, "train_loss": result.training_loss, "steps": result.global_step,
                                                           "seconds": time.time() - t0, "calibration": calib, "log": trainer.state.log_history})
                for checkpoint in glob.glob(os.path.join(run_dir, "checkpoint-*")):  # no longer needed; logs stay
                    shutil.rmtree(checkpoint, ignore_errors=True)
            self.state.wait_for_everyone()
            self.timings[f"{name}_s"] = time.time() - t0
        else:  # reused from an earlier run: the time it took then, not the seconds it takes to find it
            self.timings[f"{name}_s"] = done.get("seconds", time.time() - t0)
        return folder

    def load(self, folder: str):
        return self.model_cls.from_pretrained(folder, attn_implementation=self.attn)


def select_modules(args, model, parts, class_embeds) -> tuple[list[str], list[dict]]:
    candidates = candidate_modules(model, args.selection_scope)
    if args.no_layer_selection:
        return candidates, []
    n = args.fisher_samples
    gen = torch.Generator().manual_seed(args.seed)
    fi = torch.randperm(len(parts["forget"]), generator=gen)[:n]
    ri = torch.randperm(len(parts["retain"]), generator=gen)[:n]
    ranking = relative_fisher_scores(
        model, lambda: class_embeds, parts["forget"].pixel_values[fi], parts["forget"].labels[fi],
        parts["retain"].pixel_values[ri], parts["retain"].labels[ri], candidates,
    )
    return select_top(ranking, top_k=args.top_k_modules), ranking


OURS = "forget_remind_restore"
# The same search every method gets (learning rate x its main weight), here over the forget stage.
OURS_GRID = [{"learning_rate": lr, "forget_weight": w} for lr in (5e-4, 1e-3) for w in (1.0, 2.0)]


def stage_steps(args, parts, num_processes: int = 1) -> tuple[int, int]:
    """Optimiser steps of the method's forget and remind stages with these settings."""
    per_step = args.batch_size * num_processes
    forget = math.ceil(math.ceil(len(parts["forget"]) / per_step) * args.forget_epochs)
    remind = 0 if args.no_remind else math.ceil(math.ceil(len(parts["retain"]) / per_step) * args.remind_epochs)
    return forget, remind


def budget_steps(args, parts, num_processes: int = 1) -> int:
    """Optimiser steps of the project's method with these settings: every baseline gets exactly as many."""
    return sum(stage_steps(args, parts, num_processes))


def _fresh_student(run: StageRunner):
    """A trainable copy of the original (the teacher is one), so search candidates never share weights."""
    student = copy.deepcopy(run.accelerator_free_teacher())
    student.requires_grad_(True)
    return student.train()


def baseline_defaults(args, method) -> dict:
    cfg_default = {f.name: f.default for f in dataclasses.fields(method.config)}
    out = {"learning_rate": args.baseline_learning_rate or method.learning_rates[-1]}
    if method.weight_field:
        out[method.weight_field] = args.baseline_weight if args.baseline_weight is not None else cfg_default[method.weight_field]
    return out


def baseline_candidate(run: StageRunner, method, modules: list[str]):
    """``train(name, hyperparameters, steps) -> stage folder`` for one baseline, fully fine-tuning ``modules``."""
    from .trainers.baselines import saliency_mask

    def train(name: str, hp: dict, steps: int) -> str:
        args = run.args
        extra = {k: v for k, v in hp.items() if k != "learning_rate"}
        cfg = _stage_args(method.config, args, os.path.join(run.staging, "stages", f"{name}-run"), hp["learning_rate"], 1.0, max_steps=steps, **extra)

        def student():
            m = _fresh_student(run)
            _set_trainable(m, modules)
            return m

        def kwargs(m):
            if not method.needs_saliency:
                return {}
            f = run.streams["forget"]
            n = min(len(f), 4 * args.fisher_samples)
            return {"saliency_mask": saliency_mask(m, f.pixel_values[:n], f.labels[:n], run.class_embeds, run.logit_scale, fraction=cfg.saliency_fraction)}

        return run.stage(name, method.trainer, cfg, student, method.primary, trainer_kwargs=kwargs, student_spec={"modules": modules})

    return train


def _forget_stage(run: StageRunner, base, selected: list[str], name: str, lr: float, weight: float, epochs: float = 1.0, max_steps: int = -1) -> str:
    """The forget stage on ``base()``: LoRA adapters on the selected modules, merged afterwards, or with
    --no_lora the selected modules themselves. The method and its hyperparameter search both run this."""
    from peft import LoraConfig, get_peft_model

    from .trainers import ForgetConfig, ForgetTrainer

    args = run.args

    def student():
        model = base()
        if args.no_lora:
            _set_trainable(model, selected)
            return model
        return get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=selected))

    cfg = _stage_args(ForgetConfig, args, os.path.join(run.staging, "stages", f"{name}-run"), lr, epochs, max_steps=max_steps,
                      forget_loss=args.forget_loss, forget_weight=weight)
    lora = None if args.no_lora else {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout}
    return run.stage(name, ForgetTrainer, cfg, student, "forget", after=None if args.no_lora else lambda m: m.merge_and_unload(),
                     student_spec={"modules": selected, "lora": lora})


def ours_candidate(run: StageRunner, selected: list[str], forget_steps: int = 0, remind_steps: int = 0):
    """``train(name, hyperparameters, steps)`` on a fresh copy of the original: the forget stage alone, or with
    ``--hp_search_remind`` forget then remind, the candidate's steps split between them as in the full run
    (``forget_steps`` : ``remind_steps``), so the search scores what reminding gives back too."""
    with_remind = run.args.hp_search_remind and not run.args.no_remind and remind_steps > 0

    def train(name: str, hp: dict, steps: int) -> str:
        n_forget = steps  # a one-step candidate cannot be split: it forgets
        if with_remind and steps >= 2:
            n_forget = min(steps - 1, max(1, round(steps * forget_steps / (forget_steps + remind_steps))))
        last = _forget_stage(run, lambda: _fresh_student(run), selected, name, hp["learning_rate"], hp["forget_weight"], max_steps=n_forget)
        if n_forget < steps:
            last = _remind_stage(run, last, selected, f"{name}-remind", max_steps=steps - n_forget)
        return last

    return train


def _remind_stage(run: StageRunner, base_folder: str, selected: list[str], name: str, max_steps: int = -1) -> str:
    """The remind stage on the weights in ``base_folder``: EMA reminding of the same modules the forget stage tuned."""
    from .trainers import RemindConfig, RemindTrainer

    args = run.args

    def student():
        model = run.load(base_folder)
        _set_trainable(model, selected)
        return model

    cfg = _stage_args(RemindConfig, args, os.path.join(run.staging, "stages", f"{name}-run"), args.remind_learning_rate, args.remind_epochs,
                      max_steps=max_steps, ema_decay=args.ema_decay, forget_guard_weight=args.forget_guard_weight,
                      forget_loss=args.forget_loss, anchor_contrastive_weight=args.anchor_contrastive_weight)
    start = os.path.relpath(base_folder, os.path.join(run.staging, "stages"))
    return run.stage(name, RemindTrainer, cfg, student, "retain", student_spec={"modules": selected, "starts_from": start})


def hp_search(run: StageRunner, train, grid: list[dict], budget: int) -> dict:
    """Train each setting for a fraction of the budget; keep the best calibration composite (never test data)."""
    steps = max(1, round(budget * run.args.hp_search_fraction))
    rows = []
    for i, hp in enumerate(progress(grid, desc="hyperparameter search")):
        folder = train(f"search/{i}", hp, steps)
        calib = {k.split("/", 1)[1]: v for k, v in stage_done(folder)["calibration"].items()}
        rows.append({**hp, **calib, "composite": composite_score(calib, run.original_calib)})
    best = max(rows, key=lambda r: r["composite"])  # ties: the first (lowest learning rate)
    return {"steps": steps, "grid": rows, "chosen": {k: best[k] for k in grid[0]}}


def forget_remind(run: StageRunner, model, selected: list[str]) -> tuple[str, list[str]]:
    """The project's method: LoRA (or selected-module) forgetting, then EMA reminding of the same modules."""
    args = run.args
    last = _forget_stage(run, lambda: model, selected, "forget", args.forget_learning_rate, args.forget_weight, epochs=args.forget_epochs)
    done = ["forget"]
    if not args.no_remind:
        last = _remind_stage(run, last, selected, "remind")
        done.append("remind")
    return last, done
