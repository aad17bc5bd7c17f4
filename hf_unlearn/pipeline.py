"""forget -> remind -> restore, end to end: ``unlearn(UnlearnArguments) -> report``. The recipe only calls this.

Everything is validated before training. The run builds its result in ``<output_dir>.incomplete`` (stage
checkpoints under ``stages/``; a finished stage is not redone when the same command is rerun) and renames it
to ``output_dir`` only when complete, so a crash never leaves a half-written model folder.
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

import numpy as np
import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoProcessor
from transformers.trainer_utils import get_last_checkpoint

from . import family, precision
from . import report as reporting
from .config import UnlearnArguments, _split_list
from .data import DataError, ImageSet, IndexDataset, UnlearningCollator, load_image_dataset, preprocess
from .evaluation import EvalSet, composite_score, evaluate_sets
from .methods import METHODS
from .progress import progress
from .prompts import EVAL_TEMPLATES, TRAIN_TEMPLATES, class_prompt_name, class_text_embeddings
from .selection import candidate_modules, relative_fisher_scores, select_top
from .soup import interpolate_state_dicts, search_alpha, soup_checkpoints
from .spec import SpecError, SubgroupSpec, build_splits, ensure_class_label, group_masks
from .teacher import frozen_copy

logger = logging.getLogger("hf_unlearn")

SUPPORTED_MODEL_TYPES = tuple(family.MODEL_CLASSES)
COMPLETE = "stage_complete.json"


class ModelError(ValueError):
    """A checkpoint that is not a CLIP-family dual encoder, or has no safetensors weights."""


class OutputExistsError(FileExistsError):
    pass


# ---- checks that run before anything is trained ---------------------------------------------------------

def check_output_dir(output_dir: str, overwrite: bool) -> None:
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)) and not overwrite:
        raise OutputExistsError(f"output folder {output_dir!r} already holds a result; pass --overwrite_output_dir or choose another --output_dir")


def load_clip(name_or_path: str, attn_implementation: str | None = None):
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a model config from {name_or_path!r}: {err}") from err
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{name_or_path!r} is a {config.model_type!r} model, not a CLIP dual encoder; supported model types: {SUPPORTED_MODEL_TYPES}")
    cls = family.model_class(config.model_type)
    try:
        model = cls.from_pretrained(name_or_path, use_safetensors=True, trust_remote_code=False, attn_implementation=attn_implementation)
    except OSError as err:
        raise ModelError(f"cannot load safetensors weights from {name_or_path!r} (pickled weights are never loaded): {err}") from err
    processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=False)
    return model, processor


def weights_folder(name_or_path: str) -> str:
    """The folder holding the original's safetensors files (the Hub cache for Hub ids: already downloaded)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    from huggingface_hub import snapshot_download

    return snapshot_download(name_or_path, allow_patterns=["*.safetensors", "*.json", "*.txt"])


def _default_output_dir(args: UnlearnArguments) -> str:
    name = os.path.basename(os.path.normpath(args.dataset or "demo"))
    tag = "-".join(v for _, v in SubgroupSpec.parse(args.forget).conditions) if args.forget else "default"
    return os.path.join("runs", f"{name}-{tag}".replace("/", "_"))


# ---- data ----------------------------------------------------------------------------------------------

def _subgroup_masks(ds, spec: SubgroupSpec, class_column: str) -> dict[str, torch.Tensor]:
    """Per (class x spec column) accuracies for the report's table, e.g. 'dog/sketch'."""
    extra = [c for c, _ in spec.conditions if c != class_column]
    cols = [class_column] + extra
    values = {c: np.asarray(ds[c]) for c in cols}
    names = {c: (ds.features[c].names if hasattr(ds.features[c], "names") else None) for c in cols}
    keys = {}
    for i in range(len(ds)):
        keys.setdefault(tuple(values[c][i] for c in cols), []).append(i)
    out = {}
    for key, rows in sorted(keys.items()):
        label = "/".join(str(names[c][v]) if names[c] else str(v) for c, v in zip(cols, key))
        m = torch.zeros(len(ds), dtype=torch.bool)
        m[rows] = True
        out[label] = m
    return out


def _stratified_cap(ds, class_column: str, cap: int | None, seed: int):
    if not cap or len(ds) <= cap:
        return ds
    split = ds.train_test_split(test_size=cap, stratify_by_column=class_column, seed=seed)
    return split["test"]


def _load_checked(args: UnlearnArguments):
    dsd = load_image_dataset(args.dataset)
    if args.attribute_list:
        from .attributes import add_attributes
        from .data import image_column

        dsd = add_attributes(dsd, args.attribute_list, image_column(next(iter(dsd.values())).features))
    dsd = ensure_class_label(dsd, args.class_column)
    for split in (args.train_split, args.eval_split):
        if split not in dsd:
            raise DataError(f"dataset {args.dataset!r} has no {split!r} split; splits: {sorted(dsd)}")
    return dsd


def _eval_plan(args: UnlearnArguments, dsd) -> dict:
    """Check the held-out data (eval split masks, zero-shot datasets) without decoding any image."""
    forget = SubgroupSpec.parse(args.forget)
    retain = SubgroupSpec.parse(args.retain) if args.retain else None
    test = dsd[args.eval_split]
    try:
        tf, tr, to, _ = group_masks(test, forget, retain, args.class_column)
    except SpecError as err:
        raise SpecError(f"on the {args.eval_split!r} split: {err}; forgetting could not be measured") from None
    zs = []
    for name in args.zeroshot_list:
        zdsd = load_image_dataset(name)
        zsplit = args.eval_split if args.eval_split in zdsd else sorted(zdsd)[-1]
        zds = ensure_class_label(zdsd[zsplit], args.class_column)
        zs.append((os.path.basename(os.path.normpath(name)), _stratified_cap(zds, args.class_column, args.max_eval_samples, args.seed)))
    masks = {r: torch.as_tensor(m) for r, m in zip(("forget", "retain", "other"), (tf, tr, to)) if m.any()}
    return dict(forget=forget, test=test, masks=masks, zeroshot=zs)


def prepare_eval_sets(args: UnlearnArguments, processor, dsd=None, plan: dict | None = None) -> list[EvalSet]:
    """Held-out sets: the dataset's eval split with forget / retain / other masks, then each zero-shot dataset."""
    plan = plan or _eval_plan(args, dsd if dsd is not None else _load_checked(args))
    test, keep = plan["test"], [args.class_column]
    test_images = ImageSet.from_dataset(preprocess(test, processor.image_processor, keep, args.eval_split), args.class_column)
    class_names = test.features[args.class_column].names
    test_sets = [EvalSet(os.path.basename(os.path.normpath(args.dataset)), test_images, class_names, plan["masks"],
                         _subgroup_masks(test, plan["forget"], args.class_column))]
    for name, zds in plan["zeroshot"]:
        zimg = ImageSet.from_dataset(preprocess(zds, processor.image_processor, keep, name), args.class_column)
        test_sets.append(EvalSet(name, zimg, zds.features[args.class_column].names))
    return test_sets


def prepare_data(args: UnlearnArguments, processor):
    """Validate the specs, carve splits, preprocess only the rows needed. Raises before any training."""
    forget = SubgroupSpec.parse(args.forget)
    retain = SubgroupSpec.parse(args.retain) if args.retain else None
    dsd = _load_checked(args)
    train = dsd[args.train_split]
    class_names = train.features[args.class_column].names
    splits = build_splits(
        train, forget, retain, args.class_column, args.calibration_fraction, args.max_calibration, args.max_other, args.seed
    )
    if len(splits.forget) == 0:
        raise SpecError(f"forget spec {args.forget!r} matches only {len(splits.calib_forget)} rows, too few to train on")
    plan = _eval_plan(args, dsd)
    # images are decoded and preprocessed only now, after every check above has passed
    keep = [args.class_column]
    order = np.concatenate([splits.forget, splits.retain, splits.other, splits.calib_forget, splits.calib_retain, splits.calib_other])
    images = ImageSet.from_dataset(preprocess(train.select(order), processor.image_processor, keep, args.train_split), args.class_column)
    parts, start = {}, 0
    for key in ("forget", "retain", "other", "calib_forget", "calib_retain", "calib_other"):
        n = len(getattr(splits, key))
        parts[key] = images.subset(range(start, start + n))
        start += n
    calib_images = ImageSet(
        torch.cat([parts[k].pixel_values for k in ("calib_forget", "calib_retain", "calib_other")]),
        torch.cat([parts[k].labels for k in ("calib_forget", "calib_retain", "calib_other")]),
    )
    sizes = [len(parts[k]) for k in ("calib_forget", "calib_retain", "calib_other")]
    role_masks = {}
    for i, role in enumerate(("forget", "retain", "other")):
        m = torch.zeros(sum(sizes), dtype=torch.bool)
        m[sum(sizes[:i]) : sum(sizes[: i + 1])] = True
        if sizes[i]:
            role_masks[role] = m
    calibration = EvalSet("calibration", calib_images, class_names, role_masks)

    return dict(forget=forget, retain=retain, splits=splits, parts=parts, calibration=calibration, plan=plan, class_names=class_names)


# The held-out sets and the original model's metrics on them depend only on these inputs, not on the seed of
# the run (unless a capped zero-shot subset is drawn) or on any training setting: a benchmark that runs many
# methods in one process prepares and scores them once. One entry: held-out sets can be large.
_HELD_OUT_CACHE: dict = {}


def _held_out_key(args: UnlearnArguments, eval_templates, bf16: bool) -> str:
    return json.dumps([os.path.abspath(args.model_name_or_path) if os.path.exists(args.model_name_or_path) else args.model_name_or_path,
                       args.dataset, args.eval_split, args.forget, args.retain, args.class_column, args.zeroshot_list,
                       args.max_eval_samples, args.seed if args.max_eval_samples else None, list(eval_templates), bf16])


def held_out(args: UnlearnArguments, processor, plan: dict, original, eval_templates) -> tuple[list[EvalSet], dict]:
    """Preprocessed held-out sets and the original model's metrics on them (memoised within the process)."""
    key = _held_out_key(args, eval_templates, precision._STATE["bf16"])
    if key not in _HELD_OUT_CACHE:
        test_sets = prepare_eval_sets(args, processor, plan=plan)
        metrics = evaluate_sets(original, processor.tokenizer, test_sets, eval_templates, subgroups=True)
        _HELD_OUT_CACHE.clear()
        _HELD_OUT_CACHE[key] = (test_sets, metrics)
    return _HELD_OUT_CACHE[key]


# ---- stages --------------------------------------------------------------------------------------------

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


def _stage_done(folder: str) -> dict | None:
    path = os.path.join(folder, COMPLETE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


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


def _close_writers(trainer) -> None:
    """Flush logging backends that the post-training log above reopened (their on_train_end already ran)."""
    for cb in trainer.callback_handler.callbacks:
        writer = getattr(cb, "tb_writer", None)
        if writer is not None:
            writer.close()
            cb.tb_writer = None


class _Run:
    """What every stage of one run shares: the models, data, prompts and where things are written."""

    def __init__(self, args, state, staging, processor, teacher, data, tokens, class_embeds, n_templates, attn, model_cls, train_templates):
        self.args, self.state, self.staging, self.processor, self.teacher = args, state, staging, processor, teacher
        self.data, self.tokens, self.class_embeds, self.n_templates = data, tokens, class_embeds, n_templates
        self.attn, self.model_cls, self.train_templates = attn, model_cls, train_templates
        self.timings: dict[str, float] = {}
        self.logit_scale = float(teacher.logit_scale.exp())
        self.original_calib: dict = {}
        parts = data["parts"]
        self.streams = {"forget": parts["forget"], "retain": parts["retain"], "anchor": parts["other"]}

    def accelerator_free_teacher(self):
        return getattr(self.teacher, "module", self.teacher)

    def calibration(self, model) -> dict:
        return evaluate_sets(model, self.processor.tokenizer, [self.data["calibration"]], self.train_templates)

    def stage(self, name: str, trainer_cls, stage_args, make_student, primary: str, after=None, trainer_kwargs=None) -> str:
        """Train one stage (or reuse it if finished; resume it if interrupted and asked), save it atomically.

        ``make_student()`` builds the model to train; ``after(student)`` turns it into the plain model to save
        (e.g. merging LoRA adapters); ``trainer_kwargs(student)`` adds method-specific Trainer arguments. Calibration FA / RA / OA of the saved model go to the Trainer's log.
        """
        t0 = time.time()
        folder = os.path.join(self.staging, "stages", name)
        run_dir = os.path.join(self.staging, "stages", f"{name}-run")
        if _stage_done(folder) is None:
            resume = _resume_point(run_dir, self.args.resume_from_checkpoint, self.state)
            student = make_student()
            collator = UnlearningCollator(primary, self.streams, proxy=self.args.proxy_weight > 0 and not self.args.no_distill, seed=self.args.seed)
            trainer = trainer_cls(
                model=student, args=stage_args, train_dataset=IndexDataset(len(self.streams[primary])), data_collator=collator,
                processing_class=self.processor, teacher=self.teacher, class_embeds=self.class_embeds, prompt_tokens=self.tokens,
                n_templates=self.n_templates, **(trainer_kwargs(student) if trainer_kwargs else {}),
            )
            result = trainer.train(resume_from_checkpoint=resume)
            final = after(student) if after else student
            calib = {f"calibration/{k}": v for k, v in self.calibration(final).items()}
            trainer.log(dict(calib))  # FA / RA / OA of what this stage hands on, to every report_to backend
            _close_writers(trainer)
            if self.state.is_main_process:
                _save_stage(final, self.processor, folder, {"stage": name, "train_loss": result.training_loss, "steps": result.global_step,
                                                           "calibration": calib, "log": trainer.state.log_history})
                for checkpoint in glob.glob(os.path.join(run_dir, "checkpoint-*")):  # no longer needed; logs stay
                    shutil.rmtree(checkpoint, ignore_errors=True)
            self.state.wait_for_everyone()
        self.timings[f"{name}_s"] = time.time() - t0
        return folder

    def load(self, folder: str):
        return self.model_cls.from_pretrained(folder, attn_implementation=self.attn)


def _select_modules(args, model, parts, class_embeds) -> tuple[list[str], list[dict]]:
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


def _budget_steps(args, parts, num_processes: int = 1) -> int:
    """Optimiser steps of the project's method with these settings: every baseline gets exactly as many."""
    per_step = args.batch_size * num_processes
    steps = math.ceil(math.ceil(len(parts["forget"]) / per_step) * args.forget_epochs)
    if not args.no_remind:
        steps += math.ceil(math.ceil(len(parts["retain"]) / per_step) * args.remind_epochs)
    return steps


def _fresh_student(run: _Run):
    """A trainable copy of the original (the teacher is one), so search candidates never share weights."""
    student = copy.deepcopy(run.accelerator_free_teacher())
    student.requires_grad_(True)
    return student.train()


def _baseline_defaults(args, method) -> dict:
    cfg_default = {f.name: f.default for f in dataclasses.fields(method.config)}
    out = {"learning_rate": args.baseline_learning_rate or method.learning_rates[-1]}
    if method.weight_field:
        out[method.weight_field] = args.baseline_weight if args.baseline_weight is not None else cfg_default[method.weight_field]
    return out


def _baseline_candidate(run: _Run, method, modules: list[str]):
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

        return run.stage(name, method.trainer, cfg, student, method.primary, trainer_kwargs=kwargs)

    return train


def _ours_candidate(run: _Run, selected: list[str]):
    """``train(name, hyperparameters, steps)`` of the forget stage alone (LoRA on the selected modules)."""
    from peft import LoraConfig, get_peft_model

    from .trainers import ForgetConfig, ForgetTrainer

    def train(name: str, hp: dict, steps: int) -> str:
        args = run.args
        cfg = _stage_args(ForgetConfig, args, os.path.join(run.staging, "stages", f"{name}-run"), hp["learning_rate"], 1.0, max_steps=steps,
                          forget_loss=args.forget_loss, forget_weight=hp["forget_weight"])
        lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=selected)
        return run.stage(name, ForgetTrainer, cfg, lambda: get_peft_model(_fresh_student(run), lora), "forget", after=lambda m: m.merge_and_unload())

    return train


def _search(run: _Run, train, grid: list[dict], budget: int) -> dict:
    """Train each setting for a fraction of the budget; keep the best calibration composite (never test data)."""
    steps = max(1, round(budget * run.args.hp_search_fraction))
    rows = []
    for i, hp in enumerate(progress(grid, desc="hyperparameter search")):
        folder = train(f"search/{i}", hp, steps)
        calib = {k.split("/", 1)[1]: v for k, v in _stage_done(folder)["calibration"].items()}
        rows.append({**hp, **calib, "composite": composite_score(calib, run.original_calib)})
    best = max(rows, key=lambda r: r["composite"])  # ties: the first (lowest learning rate)
    return {"steps": steps, "grid": rows, "chosen": {k: best[k] for k in grid[0]}}


def _forget_remind(run: _Run, model, selected: list[str]) -> tuple[str, list[str]]:
    """The project's method: LoRA (or selected-module) forgetting, then EMA reminding of the same modules."""
    from peft import LoraConfig, get_peft_model

    from .trainers import ForgetConfig, ForgetTrainer, RemindConfig, RemindTrainer

    args, stages = run.args, os.path.join(run.staging, "stages")

    def forget_student():
        if args.no_lora:
            _set_trainable(model, selected)
            return model
        return get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=selected))

    fargs = _stage_args(ForgetConfig, args, os.path.join(stages, "forget-run"), args.forget_learning_rate, args.forget_epochs,
                        forget_loss=args.forget_loss, forget_weight=args.forget_weight)
    last = run.stage("forget", ForgetTrainer, fargs, forget_student, "forget", after=None if args.no_lora else lambda m: m.merge_and_unload())
    done = ["forget"]
    if not args.no_remind:
        def remind_student():
            student = run.load(last)
            _set_trainable(student, selected)
            return student

        rargs = _stage_args(RemindConfig, args, os.path.join(stages, "remind-run"), args.remind_learning_rate, args.remind_epochs,
                            ema_decay=args.ema_decay, forget_guard_weight=args.forget_guard_weight, forget_loss=args.forget_loss)
        last = run.stage("remind", RemindTrainer, rargs, remind_student, "retain")
        done.append("remind")
    return last, done


def unlearn(args: UnlearnArguments) -> dict:
    """Run the whole method and return the report (also written to ``output_dir``)."""
    from transformers import set_seed

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU-only: gloo processes, not a single one
    t_start = time.time()
    if args.model_name_or_path is None or args.dataset is None:
        from .demo import DEMO_FORGET, ensure_demo

        with state.main_process_first():
            model_dir, data_dir = ensure_demo()
        args.model_name_or_path = args.model_name_or_path or model_dir
        args.dataset = args.dataset or data_dir
        args.forget = args.forget or DEMO_FORGET
        args.output_dir = args.output_dir or os.path.join("runs", "demo")
    if not args.forget:
        raise SpecError("no forget spec; pass --forget 'column=value[,column=value...]'")
    args.output_dir = args.output_dir or _default_output_dir(args)
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    staging = os.path.normpath(args.output_dir) + ".incomplete"
    set_seed(args.seed)
    timings = {}

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision.set_default(precision.resolve(args.precision, device))
    attn = precision.attn_implementation(device)
    model, processor = load_clip(args.model_name_or_path, attn)
    model_cls = type(model)
    tokenizer = processor.tokenizer
    train_templates = tuple(_split_list(args.train_templates, "|")) or TRAIN_TEMPLATES
    eval_templates = tuple(_split_list(args.eval_templates, "|")) or EVAL_TEMPLATES
    with state.main_process_first():  # the first process fills the datasets cache, the others read it
        data = prepare_data(args, processor)
    parts, class_names = data["parts"], data["class_names"]
    timings["data_s"] = time.time() - t_start
    if state.is_main_process:
        os.makedirs(os.path.join(staging, "stages"), exist_ok=True)  # only once every input check has passed
    state.wait_for_everyone()
    logger.info("splits: %s", data["splits"].sizes())

    teacher = frozen_copy(model)
    t0 = time.time()
    test_sets, original_test = held_out(args, processor, data["plan"], teacher, eval_templates)
    original_calib = evaluate_sets(teacher, tokenizer, [data["calibration"]], train_templates)
    timings["eval_original_s"] = time.time() - t0
    class_embeds = class_text_embeddings(teacher, tokenizer, class_names, train_templates)
    prompts = [t.format(class_prompt_name(c)) for c in class_names for t in train_templates]
    tokens = family.tokenize(model, tokenizer, prompts)

    run = _Run(args, state, staging, processor, teacher, data, tokens, class_embeds, len(train_templates), attn, model_cls, train_templates)
    run.original_calib = original_calib
    budget = _budget_steps(args, parts, state.num_processes)
    t0 = time.time()
    if args.method == OURS:
        selected, ranking = _select_modules(args, model, parts, class_embeds)
        timings["selection_s"] = time.time() - t0
        logger.info("tuning %d modules: %s", len(selected), selected)
        hparams = {"learning_rate": args.forget_learning_rate, "forget_weight": args.forget_weight}
        search = _search(run, _ours_candidate(run, selected), OURS_GRID, budget) if args.hp_search else None
        if search:
            hparams = search["chosen"]
            args.forget_learning_rate, args.forget_weight = hparams["learning_rate"], hparams["forget_weight"]
        last_dir, stage_names = _forget_remind(run, model, selected)
    else:
        method = METHODS[args.method]
        selected, ranking = candidate_modules(model, args.selection_scope), []  # baselines fine-tune the whole scope
        hparams = _baseline_defaults(args, method)
        search = _search(run, _baseline_candidate(run, method, selected), method.grid(), budget) if args.hp_search else None
        if search:
            hparams = search["chosen"]
        last_dir = _baseline_candidate(run, method, selected)(method.name, hparams, budget)
        stage_names = [method.name]
    timings.update(run.timings)
    stages_info = {n: {k: v for k, v in _stage_done(os.path.join(staging, "stages", n)).items() if k != "log"} for n in stage_names}

    # -- restore: choose the soup weight on calibration data, then write the soup as a plain checkpoint --
    t0 = time.time()
    unlearned = run.load(last_dir)
    sd_u = {k: v.clone() for k, v in unlearned.state_dict().items()}
    sd_o = teacher.state_dict()

    def calib_at(alpha: float) -> dict:
        unlearned.load_state_dict(interpolate_state_dicts(sd_u, sd_o, alpha))
        return run.calibration(unlearned)

    alphas = [1.0] if args.no_restore or args.method != OURS else args.alphas  # baselines have no restore step
    chosen, curve = search_alpha(calib_at, alphas, args.fa_target, original_calib)
    alpha = chosen["alpha"]
    if state.is_main_process:
        for name in os.listdir(staging):  # a rerun rewrites the final files
            if name != "stages":
                p = os.path.join(staging, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        soup_checkpoints([last_dir, weights_folder(args.model_name_or_path)], [alpha, 1 - alpha], staging)
        os.remove(os.path.join(staging, COMPLETE))  # copied from the stage folder; the final model is not a stage
    state.wait_for_everyone()
    timings["restore_s"] = time.time() - t0
    logger.info("restore: alpha=%.2f (calibration FA %.3f)", alpha, chosen["FA"])

    # -- evaluate the saved model exactly as a user loads it --
    t0 = time.time()
    final = run.load(staging)
    final_test = evaluate_sets(final, AutoProcessor.from_pretrained(staging).tokenizer, test_sets, eval_templates, subgroups=True)
    timings["eval_final_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start
    state.wait_for_everyone()  # every process has read the staging folder before it is moved into place

    result = reporting.build_report(
        args=args, splits=data["splits"].sizes(), selected=selected, ranking=ranking, stages=stages_info, alpha=alpha,
        curve=curve, original=original_test, unlearned=final_test, timings=timings,
        train_templates=train_templates, eval_templates=eval_templates,
    )
    result["method"] = args.method
    result["hyperparameters"] = {"chosen": hparams, "budget_steps": budget, "search": search}
    if state.is_main_process:
        reporting.write_outputs(staging, result)
        _publish(staging, args.output_dir, args.overwrite_output_dir)
        print(reporting.format_table(result))
    state.wait_for_everyone()
    if args.push_to_hub and state.is_main_process:
        from .hub import push_output

        result["hub_url"] = push_output(args.output_dir, args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)),
                                        private=args.hub_private_repo, include_stages=args.hub_push_stages)
    return result


def _publish(staging: str, output_dir: str, overwrite: bool) -> None:
    """Atomically move the finished run into place; an old result is removed only after the move succeeded."""
    old = None
    if os.path.exists(output_dir):
        check_output_dir(output_dir, overwrite)
        old = os.path.normpath(output_dir) + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output_dir, old)
    os.replace(staging, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
