"""Stage records, reuse and resume: a finished stage is reused, an interrupted one resumed from its last Trainer
checkpoint, each only if it was trained with the current settings.

A finished stage folder holds the saved model and ``stage_complete.json`` (its settings, steps, seconds, calibration
figures and log); it is written atomically, so it is either complete or absent. Each Trainer checkpoint of a running
stage carries ``stage_state.json`` (its settings and seconds so far).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import time

from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .errors import UsageError
from .outputs import publish
from .trainers.base import saved_checkpoint

logger = logging.getLogger("hf_unlearn")

COMPLETE = "stage_complete.json"
STATE_FILE = "stage_state.json"

# TrainingArguments that change what a stage trains (the rest are logging, devices, saving, ...)
TRAINING_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                 "seed", "data_seed", "lr_scheduler_type", "warmup_steps", "weight_decay")

# Run settings every stage depends on (model, data, prompts, precision): a stage folder left by a run on other
# inputs must not be handed on, even if its trainer's own settings match.
INPUT_KEYS = ("model_name_or_path", "dataset", "forget", "retain", "attributes", "class_column", "train_split",
              "calibration_fraction", "max_calibration", "max_forget_calibration", "max_other", "max_forget", "max_retain",
              "train_templates", "augment", "alternate_other_proxy", "precision")


class StageSettingsError(UsageError, ValueError):
    """A finished stage or a checkpoint trained with other settings than the run asks for."""


def stage_settings(trainer_cls, stage_args, inputs: dict, student_spec: dict) -> dict:
    """What a stage is trained with: its trainer, its config's own fields, the TrainingArguments above, the run's
    ``inputs`` and how its student was built (``student_spec``: tuned modules, LoRA shape, the stage it starts from)."""
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    keys = [f.name for f in dataclasses.fields(stage_args) if f.name not in base] + list(TRAINING_KEYS)
    out = {"trainer": trainer_cls.__name__, **{k: getattr(stage_args, k) for k in keys}, "inputs": inputs, "student": student_spec}
    return json.loads(json.dumps(out, default=str))


def finished_stage(folder: str) -> dict | None:
    """The record of a finished stage, or None if the stage has not finished."""
    path = os.path.join(folder, COMPLETE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def stage_calibration(folder: str) -> dict:
    """The calibration FA / RA / OA that the finished stage in ``folder`` recorded for the model it hands on."""
    return {k.split("/", 1)[1]: v for k, v in finished_stage(folder)["calibration"].items()}


def save_stage(model, processor, folder: str, record: dict) -> None:
    """Write a finished stage atomically: a stage folder is either complete or absent."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    with open(os.path.join(tmp, COMPLETE), "w") as f:
        json.dump(record, f, indent=2)
    publish(tmp, folder, overwrite=True)  # a stage it replaces is removed only once the new one is in place


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_differences(recorded: dict, settings: dict) -> str:
    """The settings that differ, ``name: recorded -> now`` (the first six; nested settings by dotted name), or ''."""
    old, new = _flatten(recorded), _flatten(settings)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6]) + more


def check_reusable(folder: str, recorded: dict, settings: dict, interrupted: bool = False) -> None:
    """A finished stage is reused (an ``interrupted`` one's checkpoint resumed) only if it was trained with these
    settings; otherwise it would silently hand on a model the current arguments did not ask for."""
    shown = settings_differences(recorded, settings)
    if shown:
        what, fix = (("an interrupted stage's checkpoint", "rerun without --resume_from_checkpoint to start that stage over")
                     if interrupted else ("a finished stage", "delete that stage folder to retrain it"))
        raise StageSettingsError(f"{folder} is {what} trained with other settings ({shown}); use a new --output_dir, or {fix}")


def resume_point(run_dir: str, resume: bool, state) -> str | None:
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


class StageStateCallback(TrainerCallback):
    """Writes the stage's settings and seconds so far next to every Trainer checkpoint, so a resume can refuse a
    checkpoint trained with other settings and a resumed stage reports its whole training time."""

    def __init__(self, start: float, settings: dict):
        self.start, self.settings = start, settings

    def on_save(self, args, state, control, **kwargs):
        folder = saved_checkpoint(args, state)
        if folder:
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump({"seconds": time.time() - self.start, "settings": self.settings}, f)


def checkpoint_state(checkpoint: str | None) -> dict:
    """What ``StageStateCallback`` wrote next to ``checkpoint`` ({} for a fresh stage)."""
    if not checkpoint:
        return {}
    with open(os.path.join(checkpoint, STATE_FILE)) as f:
        return json.load(f)


def clear_run_dir(run_dir: str) -> None:
    """A finished stage's Trainer checkpoints are no longer needed; logging backends' files stay."""
    for checkpoint in glob.glob(os.path.join(run_dir, "checkpoint-*")):
        shutil.rmtree(checkpoint, ignore_errors=True)
    if os.path.isdir(run_dir) and not os.listdir(run_dir):
        os.rmdir(run_dir)
