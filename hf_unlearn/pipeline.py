"""forget -> remind -> restore (or a baseline), end to end: ``unlearn(UnlearnArguments) -> report``.

The run is checked and prepared first (``run.py``), built in ``<output_dir>.incomplete`` (stage checkpoints under
``stages/``: a finished stage is reused when the same command is rerun, an interrupted one resumes with
``--resume_from_checkpoint``) and moved to ``output_dir`` only when complete.
"""
from __future__ import annotations

import os
import time

import torch

from . import precision
from . import report as reporting
from .audit.runner import audit_run
from .checkpointing import finished_stage
from .config import METHOD_NAME, UnlearnArguments
from .errors import ForgettingIncompleteError  # noqa: F401  (re-exported: users catch it from here)
from .evaluation import embed_images, evaluate_sets
from .method import budget_steps, forget_remind_restore, restore
from .methods import run_baseline
from .outputs import publish
from .run import device, prepare_run


def unlearn(args: UnlearnArguments) -> dict:
    """Run the method (or ``--method``'s baseline), save the model, card and report; return the report."""
    t_start = time.time()
    run, model = prepare_run(args)
    args = run.args
    trained = forget_remind_restore(run, model) if args.method == METHOD_NAME else run_baseline(run, model)
    alphas = args.alphas if args.method == METHOD_NAME and not args.no_restore else [1.0]  # baselines have no restore step
    restored = restore(run, trained["last"], alphas)

    t0 = time.time()  # the saved model, evaluated exactly as a user loads it
    final_model = run.load(run.staging)
    test_images = embed_images(final_model, run.test_sets[0].images.pixel_values)  # the audit attacks the same images: embedded once
    final = evaluate_sets(final_model, run.tokenizer, run.test_sets, run.eval_templates, subgroups=True, image_embeds=[test_images])
    run.timings["eval_final_s"] = time.time() - t0
    audit = None if args.no_audit or not run.state.is_main_process else audit_run(run, final_model, trained["modules"], test_images)
    run.timings.update(audit_s=audit["seconds"] if audit else 0.0, total_s=time.time() - t_start)
    run.state.wait_for_everyone()  # every process has read the staging folder before it is moved into place
    args = run.args  # with what a search chose

    result = _report(run, trained, restored, final, audit)
    if run.state.is_main_process:
        reporting.write_outputs(run.staging, result)
        publish(run.staging, args.output_dir, args.overwrite_output_dir)
        print(reporting.format_table(result))
        print(f"Saved to {args.output_dir}: the model (CLIPModel.from_pretrained), README.md (its card), unlearning_report.json, "
              "restore_curve.png")
    run.state.wait_for_everyone()
    shortfall = _shortfall(result, args)
    if args.push_to_hub and run.state.is_main_process and not shortfall:  # a model that did not forget is never published
        from .hub import push_output

        result["hub_url"] = push_output(args.output_dir, args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)),
                                        private=args.hub_private_repo, include_stages=args.hub_push_stages)
    if shortfall:
        headline, sentence = shortfall
        raise ForgettingIncompleteError(f"{sentence} The model is saved in {args.output_dir!r}{', NOT pushed to the Hub,' if args.push_to_hub else ''}; "
                                        "its card and report say so. Pass --allow_incomplete_forgetting to accept it.", result, headline)
    return result


def _shortfall(result: dict, args) -> tuple[str, str] | None:
    """What the run was asked for and did not achieve: a headline and a sentence (None: achieved, or accepted)."""
    if args.allow_incomplete_forgetting:
        return None
    if not result["forgetting_achieved"]:
        return "FORGETTING FAILED", reporting.outcome(result)
    if args.require_retention and not result["retention"]["kept"]:
        return "RETENTION FAILED", f"{reporting.retention_outcome(result)} (--require_retention)"
    audit = result.get("audit")
    if args.require_deep_forgetting and audit and any(v["verdict"] != "forgotten" for v in audit["verdicts"].values()):
        from .audit.outcome import audit_outcome

        return "FORGETTING FAILED", f"{audit_outcome(audit)} (--require_deep_forgetting)"
    return None


def _report(run, trained: dict, restored: dict, final: dict, audit: dict | None) -> dict:
    """The report: the groups, the stages' records, the restore, before/after metrics, the audit, the search."""
    stages = {n: {k: v for k, v in finished_stage(run.stage_folder(n)).items() if k != "log"} for n in trained["stages"]}
    result = reporting.build_report(
        args=run.args, splits=run.groups.splits.sizes(), selected=trained["modules"], ranking=trained["ranking"], stages=stages,
        restore=restored, original=run.original, unlearned=final, timings=run.timings, train_templates=run.train_templates,
        eval_templates=run.eval_templates,
    )
    result["method"] = run.args.method
    result["compute"] = {"precision": "bf16 autocast" if precision.enabled() else "fp32", "inference": precision.inference_key(), "device": device(),
                         "processes": run.state.num_processes, "cpu_threads": torch.get_num_threads()}  # figures depend on it
    if audit:
        result["audit"] = audit
    budget = budget_steps(run.args, run.groups, run.state.num_processes)
    result["hyperparameters"] = {"chosen": trained["hyperparameters"], "budget_steps": budget, "search": trained["search"]}
    return result
