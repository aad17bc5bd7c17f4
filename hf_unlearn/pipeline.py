"""forget -> remind -> restore (or a baseline), end to end: ``unlearn(UnlearnArguments) -> report``.

The recipe only calls this. Everything is validated before training (``inputs``). The run builds its result in
``<output_dir>.incomplete`` (stage checkpoints under ``stages/``; a finished stage is not redone when the same
command is rerun, an interrupted one resumes with ``--resume_from_checkpoint``) and renames it to ``output_dir``
only when complete, so a crash never leaves a half-written model folder.
"""
from __future__ import annotations

import logging
import os
import shutil
import time

import torch
from accelerate import PartialState
from transformers import AutoProcessor

from . import family, precision
from . import report as reporting
from .config import UnlearnArguments, _split_list
from .evaluation import evaluate_sets
from .inputs import (  # noqa: F401  (re-exported: the pipeline's public errors and checks)
    ModelError, OutputExistsError, default_output_dir, check_output_dir, held_out, load_clip, prepare_data, weights_folder,
)
from .methods import METHODS
from .prompts import EVAL_TEMPLATES, TRAIN_TEMPLATES, class_prompt_name, class_text_embeddings
from .selection import candidate_modules
from .soup import interpolate_state_dicts, search_alpha, soup_checkpoints
from .spec import SpecError
from .stages import (
    COMPLETE, OURS, OURS_GRID, StageRunner, baseline_candidate, baseline_defaults, budget_steps, forget_remind,
    ours_candidate, hp_search, select_modules, stage_done, stage_steps,
)
from .teacher import frozen_copy

logger = logging.getLogger("hf_unlearn")


def staging_folder(output_dir: str) -> str:
    """Where a run builds its outputs before they are moved into ``output_dir``; it exists while a run is unfinished."""
    return os.path.normpath(output_dir) + ".incomplete"


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
    args.output_dir = args.output_dir or default_output_dir(args)
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    staging = staging_folder(args.output_dir)
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

    run = StageRunner(args, state, staging, processor, teacher, data, tokens, class_embeds, len(train_templates), attn, model_cls, train_templates)
    run.original_calib = original_calib
    budget = budget_steps(args, parts, state.num_processes)
    t0 = time.time()
    if args.method == OURS:
        selected, ranking = select_modules(args, model, parts, class_embeds)
        timings["selection_s"] = time.time() - t0
        logger.info("tuning %d modules: %s", len(selected), selected)
        hparams = {"learning_rate": args.forget_learning_rate, "forget_weight": args.forget_weight}
        search = hp_search(run, ours_candidate(run, selected, *stage_steps(args, parts, state.num_processes)), OURS_GRID, budget) if args.hp_search else None
        if search:
            hparams = search["chosen"]
            args.forget_learning_rate, args.forget_weight = hparams["learning_rate"], hparams["forget_weight"]
        last_dir, stage_names = forget_remind(run, model, selected)
    else:
        method = METHODS[args.method]
        selected, ranking = candidate_modules(model, args.selection_scope), []  # baselines fine-tune the whole scope
        hparams = baseline_defaults(args, method)
        train = baseline_candidate(run, method, selected)
        search = hp_search(run, train, method.grid(), budget) if args.hp_search else None
        if search:
            hparams = search["chosen"]
        last_dir = train(method.name, hparams, budget)
        stage_names = [method.name]
    timings.update(run.timings)
    stages_info = {n: {k: v for k, v in stage_done(os.path.join(staging, "stages", n)).items() if k != "log"} for n in stage_names}

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
        train_templates=train_templates, eval_templates=eval_templates, original_calibration=original_calib,
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
