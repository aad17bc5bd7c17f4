"""A run, prepared once and handed on typed: the model and its frozen original, the data groups, the held-out sets
with the original's metrics on them, the prompt bank, and where the run writes.

``prepare_run`` does every check before anything trains (settings, output folder, model, specs, splits), then
decodes only the images the run needs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from transformers import set_seed

from . import family, precision
from .config import METHOD_NAME, UnlearnArguments, split_list
from .evaluation import EvalSet, embed_images, evaluate_sets, predict, score_sets
from .groups import EvalPlan, TrainingGroups, prepare_eval_sets, prepare_groups
from .outputs import check_not_an_input, check_output_dir, default_output_dir, recover_publish, staging_folder, write_atomically
from .selection import candidate_modules
from .soup import check_soup_inputs, weights_digest
from .prompts import EVAL_TEMPLATES, TRAIN_TEMPLATES, class_prompt_name, class_text_embeddings, compose_phrasings, template_class_embeddings, vocabulary
from .spec import SpecError
from .teacher import TeacherCache, frozen_copy

logger = logging.getLogger("hf_unlearn")


@dataclass
class Run:
    args: UnlearnArguments
    state: PartialState
    staging: str
    processor: object
    teacher: torch.nn.Module  # the frozen original, the distillation teacher of every stage
    groups: TrainingGroups
    test_sets: list[EvalSet]
    original: dict  # the original's metrics on test_sets
    original_calibration: dict  # ... and on the calibration set
    class_embeds: torch.Tensor  # the original's class prompt bank (training templates)
    prompt_tokens: dict
    train_templates: tuple[str, ...]
    eval_templates: tuple[str, ...]
    attn: str | None
    timings: dict[str, float] = field(default_factory=dict)
    teacher_cache: TeacherCache | None = None  # the teacher's embeddings of the training streams, filled on first use
    phrasing_heads: torch.Tensor | None = None  # with --forget_phrasings: the original's head per composed phrasing [N, C, dim]
    original_test_images: torch.Tensor | None = None  # the original's test-set embeddings, when this run computed them (the audit's)
    vocab_embeds: torch.Tensor | None = None  # with --proxy_vocab_kd_weight: the original's head over the generic vocabulary

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def original_model(self) -> torch.nn.Module:
        """The original as a plain module (the teacher may be placed by Accelerate)."""
        return getattr(self.teacher, "module", self.teacher)

    @property
    def logit_scale(self) -> float:
        return float(self.original_model.logit_scale.exp())

    def stage_folder(self, name: str) -> str:
        return os.path.join(self.staging, "stages", name)

    def calibration(self, model) -> dict:
        """FA / RA / OA of ``model`` on the calibration set (training phrasings: never the reported ones)."""
        return evaluate_sets(model, self.tokenizer, [self.groups.calibration], self.train_templates)

    def load(self, folder: str):
        return type(self.original_model).from_pretrained(folder, attn_implementation=self.attn, **family.NO_REMOTE_CODE)


def _with_demo_defaults(args: UnlearnArguments, state: PartialState) -> UnlearnArguments:
    """No model or dataset given: the offline demo world (built once, cached), its default subgroup and, for the
    audit, the demo CLIP pretrained without the subgroup (any subgroup of the world: a minute's pretraining, once)."""
    if args.model_name_or_path is not None and args.dataset is not None:
        return args
    from .demo import DEMO_FORGET, ensure_demo, ensure_demo_reference

    with state.main_process_first():
        model_dir, data_dir = ensure_demo()
        forget = args.forget or DEMO_FORGET
        own_reference = args.model_name_or_path is None and args.dataset is None and args.reference_model is None and not args.no_audit
        reference = ensure_demo_reference(os.path.dirname(model_dir), forget) if own_reference else args.reference_model
    return dataclasses.replace(args, model_name_or_path=args.model_name_or_path or model_dir, dataset=args.dataset or data_dir,
                               forget=forget, output_dir=args.output_dir or os.path.join("runs", "demo"), reference_model=reference)


# The held-out sets and the original's metrics on them depend only on these inputs, not on any training setting:
# a benchmark running many methods in one process prepares and scores them once. One entry: they can be large.
_HELD_OUT_MEMO: dict = {}


def _held_out_key(args: UnlearnArguments, eval_templates) -> str:
    model = os.path.abspath(args.model_name_or_path) if os.path.exists(args.model_name_or_path) else args.model_name_or_path
    return json.dumps([model, args.dataset, args.eval_split, args.forget, args.retain, args.class_column, args.zeroshot_list,
                       args.max_eval_samples, args.seed if args.max_eval_samples else None, list(eval_templates), precision.inference_key()])


def cache_root() -> str:
    """``$HF_UNLEARN_CACHE``, else ``~/.cache/hf_unlearn``: the demo world and the original models' metrics."""
    return os.environ.get("HF_UNLEARN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_unlearn")


@dataclass(frozen=True)
class CacheEntry:
    """A result kept across runs: ``path`` and the ``key`` it is named from, written beside it when it is made
    (``key_path``) so that a miss can be traced to the input that changed (compare the keys there with the new one)."""

    path: str
    key: list

    @property
    def key_path(self) -> str:
        """``<cache_root>/<kind>/keys/<hash>.json``."""
        folder, name = os.path.split(self.path)
        return os.path.join(folder, "keys", name.split(".", 1)[0] + ".json")


def cache_file(kind: str, key: list, suffix: str = ".json") -> CacheEntry:
    """``<cache_root>/<kind>/<hash of key><suffix>``: where a result keyed by ``key`` is kept across runs."""
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return CacheEntry(os.path.join(cache_root(), kind, digest + suffix), key)


def _cached(entry: CacheEntry, compute, what: str, load, save):
    """``load(entry.path)`` if an earlier run wrote it, else ``compute()``, saved there atomically with ``save(result,
    file)`` and its key beside it."""
    if os.path.exists(entry.path):
        logger.info("%s: reusing %s", what, entry.path)
        return load(entry.path)
    result = compute()
    os.makedirs(os.path.dirname(entry.key_path), exist_ok=True)  # <kind>/keys/, and so <kind>/
    write_atomically(entry.path, lambda tmp: save(result, tmp))
    write_atomically(entry.key_path, lambda tmp: _save_json(entry.key, tmp))
    return result


def _load_json(path: str):
    with open(path) as f:
        return json.load(f)


def _save_json(result, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f)


def cached_json(entry: CacheEntry, compute, what: str):
    """The JSON result at ``entry`` if an earlier run wrote it, else ``compute()``, written there atomically."""
    return _cached(entry, compute, what, _load_json, _save_json)


def cached_tensors(entry: CacheEntry, compute, what: str) -> dict[str, torch.Tensor]:
    """The tensors in the safetensors file at ``entry`` if an earlier run wrote it, else ``compute()``, written there atomically."""
    from safetensors.torch import load_file, save_file

    return _cached(entry, compute, what, load_file, lambda result, file: save_file({k: v.contiguous() for k, v in result.items()}, file))


def original_predictions(model_name_or_path: str, class_column: str, plan: EvalPlan, eval_templates, compute) -> list[torch.Tensor]:
    """The original's predictions on the held-out sets (``compute()``: one list per set), kept across runs and
    ``eval_cli`` calls: keyed by the checkpoint's weights (their bytes), the held-out data (``datasets``
    fingerprints), the templates and the precision, not by the subgroup, so a run on another subgroup of the same
    data reuses them."""
    data = [plan.test._fingerprint] + [z._fingerprint for _, z in plan.zeroshot]
    entry = cache_file("original_predictions", [weights_digest(family.weights_folder(model_name_or_path)), data, class_column,
                                                list(eval_templates), precision.inference_key(), 1])
    return [torch.tensor(p) for p in cached_json(entry, compute, "the original's held-out predictions")]


def _original_metrics(args, processor, plan, sets, original, eval_templates) -> tuple[dict, torch.Tensor | None]:
    """The original's metrics on the held-out sets, and its embeddings of the test set when computed here (not when
    its predictions came from the cache): the audit attacks the same test images with the same model."""
    test_images = []

    def compute():
        test_images.append(embed_images(original, sets[0].images.pixel_values))
        return [predict(original, processor.tokenizer, s, eval_templates, test_images[0] if i == 0 else None).tolist() for i, s in enumerate(sets)]

    predictions = original_predictions(args.model_name_or_path, args.class_column, plan, eval_templates, compute)
    return score_sets(sets, predictions, subgroups=True), (test_images[0] if test_images else None)


def prepare_held_out(args: UnlearnArguments, processor, plan: EvalPlan, original, eval_templates) -> tuple[list[EvalSet], dict, torch.Tensor | None]:
    """The preprocessed held-out sets (pixels cached by ``datasets``), the original model's metrics on them (its
    predictions kept on disk across runs) and, when computed, its test-set embeddings; memoised within the process."""
    key = _held_out_key(args, eval_templates)
    if key not in _HELD_OUT_MEMO:
        sets = prepare_eval_sets(args, processor, plan)
        metrics, test_images = _original_metrics(args, processor, plan, sets, original, eval_templates)
        _HELD_OUT_MEMO.clear()
        _HELD_OUT_MEMO[key] = (sets, metrics, test_images)
    return _HELD_OUT_MEMO[key]


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_cpu_threads(requested: int | None, local_processes: int = 1) -> int | None:
    """On a CPU machine, torch's CPU threads: ``requested``, else the cores this process may run on shared among the
    local processes (on a GPU nothing changes: None).

    ``accelerate launch`` exports OMP_NUM_THREADS=1 unless told otherwise, which on a CPU machine runs every matmul
    on one core; a run asks for its share of the machine instead (``--cpu_threads`` to choose)."""
    if device() != "cpu":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or max(1, cores // max(1, local_processes))
    torch.set_num_threads(threads)
    return threads


def prepare_run(args: UnlearnArguments) -> tuple[Run, torch.nn.Module]:
    """Check everything, load the model, carve and preprocess the groups, score the original: the run and the model
    to unlearn (a trainable copy of the run's frozen original)."""
    t_start = time.time()
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU-only: gloo processes, not a single one
    set_cpu_threads(args.cpu_threads, int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes)))
    args = _with_demo_defaults(args, state)
    if not args.forget:
        raise SpecError("no forget spec; pass --forget 'column=value[,column=value...]'")
    args = dataclasses.replace(args, output_dir=args.output_dir or default_output_dir(args.dataset, args.forget))
    if state.is_main_process:
        recover_publish(args.output_dir)  # a run killed while publishing left its old result aside
    state.wait_for_everyone()
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    check_not_an_input(args.output_dir, [("--model_name_or_path", args.model_name_or_path), ("--dataset", args.dataset),
                                         ("--reference_model", args.reference_model), ("--proxy_dataset", args.proxy_dataset),
                                         *(("--zeroshot_datasets", z) for z in args.zeroshot_list)])
    ignored = args.ignored_settings()
    if ignored and state.is_main_process:
        logger.warning("--method %s does not read %s: %s", args.method, ", ".join(f"--{n}" for n in ignored),
                       "they set the baselines" if args.method == METHOD_NAME else
                       "they set this project's method (a baseline takes --baseline_learning_rate and --baseline_weight)")
    set_seed(args.seed)
    precision.set_default(precision.use_bf16(args.precision, device()))
    attn = precision.attn_implementation(device())
    model, processor = family.load_clip(args.model_name_or_path, attn)
    check_soup_inputs(model.state_dict(), family.weights_folder(args.model_name_or_path))
    candidate_modules(model, args.selection_scope, split_list(args.target_modules), args.first_block)  # --first_block past the last block: fail now
    train_templates = tuple(split_list(args.train_templates, "|")) or TRAIN_TEMPLATES
    eval_templates = tuple(split_list(args.eval_templates, "|")) or EVAL_TEMPLATES
    with state.main_process_first():  # the first process fills the datasets cache, the others read it
        groups, plan = prepare_groups(args, processor)
    timings = {"data_s": time.time() - t_start}
    staging = staging_folder(args.output_dir)
    if args.hub_model_id and not args.push_to_hub and state.is_main_process:
        logger.warning("--hub_model_id %r is set but --push_to_hub is not: the model is saved locally only", args.hub_model_id)
    if args.resume_from_checkpoint and not os.path.isdir(staging) and state.is_main_process:
        logger.warning("--resume_from_checkpoint: nothing to resume (no %s from an interrupted run); starting from scratch", staging)
    if state.is_main_process:
        os.makedirs(os.path.join(staging, "stages"), exist_ok=True)  # only once every input check has passed
    state.wait_for_everyone()
    logger.info("splits: %s", groups.splits.sizes())

    teacher = frozen_copy(model)
    t0 = time.time()
    test_sets, original, original_test_images = prepare_held_out(args, processor, plan, teacher, eval_templates)
    original_calibration = evaluate_sets(teacher, processor.tokenizer, [groups.calibration], train_templates)
    timings["eval_original_s"] = time.time() - t0
    class_embeds = class_text_embeddings(teacher, processor.tokenizer, groups.class_names, train_templates)
    prompts = [t.format(class_prompt_name(c)) for c in groups.class_names for t in train_templates]
    run = Run(args, state, staging, processor, teacher, groups, test_sets, original, original_calibration, class_embeds,
              family.tokenize(model, processor.tokenizer, prompts), train_templates, eval_templates, attn, timings,
              TeacherCache(teacher, groups.train) if args.precompute_teacher and not args.augment else None,
              phrasing_heads(args, teacher, processor.tokenizer, groups.class_names, eval_templates) if args.forget_phrasings else None,
              original_test_images)
    if args.proxy_vocab_kd_weight:
        held_out = [c for s in test_sets for c in s.class_names]  # never distil on a label the run is scored on
        words = vocabulary(exclude=[*groups.class_names, *held_out])
        logger.info("proxy vocabulary KD over %d words (%d class names left out)", len(words), len(vocabulary()) - len(words))
        run.vocab_embeds = class_text_embeddings(teacher, processor.tokenizer, words, train_templates)
    return run, model


def phrasing_heads(args, teacher, tokenizer, class_names: list[str], eval_templates) -> torch.Tensor:
    """The teacher's zero-shot head under each composed training phrasing; the bank holds out the audit's phrasings
    and the reported templates, so the audit and the report never ask what training asked."""
    from .audit.phrasings import load_bank

    held_out = [*(load_bank(args.audit_phrasings) if args.audit_phrasings else load_bank()), *eval_templates]
    return template_class_embeddings(teacher, tokenizer, class_names, compose_phrasings(held_out, seed=args.seed))
