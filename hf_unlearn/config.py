"""Every setting of a run, each declared once with its help text and its check.

Settings come in groups. The groups a trainer reads (``DistillArguments``, ``ForgetObjective``, ...) are mixed into
that trainer's ``TrainingArguments`` subclass (``trainers/``), so a stage config and the command line share one
declaration. ``UnlearnArguments`` inherits every group: it is what the CLI, a YAML recipe and ``unlearn(**kwargs)``
fill, and ``cli.py`` builds ``--help`` from the groups, one section each.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field

from .losses import FORGET_LOSSES
from .selection import SCOPES

PRECISIONS = ("auto", "bf16", "fp32")
METHOD_NAME = "forget_remind_restore"
# old names that keep working on the command line, in YAML and as keyword arguments
ALIASES = {"anchor_kd_weight": "other_kd_weight", "anchor_contrastive_weight": "other_contrastive_weight"}


class ConfigError(ValueError):
    """A setting outside its allowed range or of the wrong type; raised before anything loads."""


def split_list(value: str | None, sep: str = ",") -> list[str]:
    return [v.strip() for v in (value or "").split(sep) if v.strip()]


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


def _type_ok(value, hint) -> bool:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in options:
        if t is type(None) and value is None:
            return True
        if t is bool and isinstance(value, bool):
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t is str and isinstance(value, str):
            return True
        if t not in (type(None), bool, int, float, str):  # anything richer (TrainingArguments' own) is not ours to check
            return True
    return False


class Checked:
    """Type and range checks of the settings a class declares, run by ``__post_init__``. Each group states its
    ranges in ``check(self)``; a trainer config that mixes groups in runs all of them after TrainingArguments'."""

    def __post_init__(self):
        parent = super()
        if hasattr(parent, "__post_init__"):
            parent.__post_init__()
        for cls in reversed(type(self).__mro__):
            if not cls.__module__.startswith("hf_unlearn") or not dataclasses.is_dataclass(cls):
                continue
            for name, hint in _own_hints(cls).items():
                if not _type_ok(getattr(self, name), hint):
                    raise ConfigError(f"--{name} {getattr(self, name)!r}: must be {_type_name(hint)}")
            if "check" in vars(cls):
                vars(cls)["check"](self)


def _own_hints(cls) -> dict:
    """The annotations a class itself declares, evaluated (they are strings under ``from __future__ import annotations``)."""
    scope = vars(sys.modules[cls.__module__])
    return {k: eval(v, scope) if isinstance(v, str) else v for k, v in vars(cls).get("__annotations__", {}).items()}


def _type_name(hint) -> str:
    names = [getattr(t, "__name__", str(t)) for t in (typing.get_args(hint) or (hint,))]
    return " or ".join("none" if n == "NoneType" else n for n in names)


def require(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"--{name} {value!r}: must be {allowed}")


def choice(self, name: str, options) -> None:
    value = getattr(self, name)
    if value not in options:
        raise ConfigError(f"unknown {name} {value!r} (--{name}); choices: {', '.join(map(str, options))}")


def _positive(self, *names):
    for n in names:
        require(getattr(self, n) > 0, n, getattr(self, n), "> 0")


def _non_negative(self, *names):
    for n in names:
        require(getattr(self, n) >= 0, n, getattr(self, n), ">= 0")


# ---- what to unlearn, and where the result goes ----------------------------------------------------------------

@dataclass
class RunArguments(Checked):
    _argument_group_name = "run"
    model_name_or_path: str | None = field(default=None, metadata=_help("CLIP checkpoint: local folder or Hub id. Default: the built-in demo model."))
    output_dir: str | None = field(default=None, metadata=_help("Where the final model goes (default: runs/<dataset>-<forget>)."))
    overwrite_output_dir: bool = field(default=False, metadata=_help("Replace an existing output folder, once the new run has finished."))


@dataclass
class DatasetArguments(Checked):
    """The dataset, the subgroup and the held-out data: what both a run and ``eval_cli`` read."""

    _argument_group_name = "data: the dataset, the subgroup and the held-out sets"
    dataset: str | None = field(default=None, metadata=_help("Labelled image dataset: local Parquet folder, save_to_disk folder, or Hub id. Default: the demo world."))
    forget: str | None = field(default=None, metadata=_help("Forget subgroup, AND-ed column=value pairs, e.g. 'label=dog,domain=sketch'."))
    retain: str | None = field(default=None, metadata=_help("Retain subgroup in the same form (default: the forget rows' classes minus the forget rows)."))
    attributes: str | None = field(default=None, metadata=_help("Computed attribute columns added before filtering (hf_unlearn.attributes), e.g. 'color'."))
    class_column: str = field(default="label", metadata=_help("The ClassLabel column whose names form the zero-shot prompts."))
    zeroshot_datasets: str | None = field(default=None, metadata=_help("Comma-separated held-out datasets for zero-shot evaluation (their eval split)."))
    train_split: str = field(default="train", metadata=_help("Split the forget / retain / other / calibration images come from."))
    eval_split: str = field(default="test", metadata=_help("Held-out split for the reported metrics."))
    max_eval_samples: int | None = field(default=None, metadata=_help("Cap per held-out zero-shot dataset (stratified random subset; default all)."))
    eval_templates: str | None = field(default=None, metadata=_help("'|'-separated prompt templates for the reported metrics (default: prompts.EVAL_TEMPLATES)."))
    seed: int = field(default=0, metadata=_help("Seed for splits, sampling and training."))

    def check(self):
        for name in ("forget", "retain"):
            value = getattr(self, name)
            require(value is None or bool(value.strip()), name, value, "a spec 'column=value[,column=value...]', or left out")
        require(self.max_eval_samples is None or self.max_eval_samples >= 1, "max_eval_samples", self.max_eval_samples, ">= 1, or left out for all images")
        from .attributes import ATTRIBUTES

        unknown = [a for a in split_list(self.attributes) if a not in ATTRIBUTES]
        require(not unknown, "attributes", self.attributes, f"names from {sorted(ATTRIBUTES)}")

    @property
    def attribute_list(self) -> list[str]:
        return split_list(self.attributes)

    @property
    def zeroshot_list(self) -> list[str]:
        return split_list(self.zeroshot_datasets)


@dataclass
class DataArguments(Checked):
    _argument_group_name = "training data"
    calibration_fraction: float = field(default=0.15, metadata=_help("Fraction of each training group held out for the restore and hyperparameter searches."))
    max_calibration: int = field(default=200, metadata=_help("Cap on calibration images per group."))
    max_other: int = field(default=1500, metadata=_help("Cap on other-class training images."))
    max_forget: int | None = field(default=None, metadata=_help("Cap on forget training images (a random subset; default all)."))
    max_retain: int | None = field(default=None, metadata=_help("Cap on retain training images (a random subset; default all)."))
    train_templates: str | None = field(default=None, metadata=_help("'|'-separated prompt templates for training and calibration (default: prompts.TRAIN_TEMPLATES)."))
    augment: bool = field(default=False, metadata=_help("Random resized crops and flips of every training image."))
    batch_size: int = field(default=32, metadata=_help("Primary-stream images per step and device (forget or retain)."))

    def check(self):
        require(0 < self.calibration_fraction < 1, "calibration_fraction", self.calibration_fraction, "in (0, 1)")
        _positive(self, "max_calibration", "batch_size")
        _non_negative(self, "max_other")
        for name in ("max_forget", "max_retain"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, value, ">= 1, or left out for all images")


@dataclass
class MethodArguments(Checked):
    _argument_group_name = "method and hyperparameter search"
    method: str = field(default=METHOD_NAME, metadata=_help(f"{METHOD_NAME} (this project's method) or a baseline: ga, neggrad_plus, ft, rl, scrub, salun, clip_erase."))
    hp_search: bool = field(default=False, metadata=_help("Search learning rate x main weight on the calibration split, then train with the best."))
    hp_search_fraction: float = field(default=0.34, metadata=_help("Fraction of the training budget each search candidate trains for."))
    hp_search_remind: bool = field(default=False, metadata=_help("This project's method: each search candidate runs forget then remind, not the forget stage alone."))
    baseline_learning_rate: float | None = field(default=None, metadata=_help("Baseline learning rate without --hp_search (default: the top of its grid)."))
    baseline_weight: float | None = field(default=None, metadata=_help("Baseline main weight without --hp_search (default: its config field's value)."))

    def check(self):
        from .methods import METHODS  # the baselines' trainers mix in groups of this module

        choice(self, "method", (METHOD_NAME, *METHODS))
        require(0 < self.hp_search_fraction <= 1, "hp_search_fraction", self.hp_search_fraction, "in (0, 1]")
        require(self.baseline_learning_rate is None or self.baseline_learning_rate > 0, "baseline_learning_rate", self.baseline_learning_rate, "> 0")
        require(self.baseline_weight is None or self.baseline_weight >= 0, "baseline_weight", self.baseline_weight, ">= 0")


@dataclass
class SelectionArguments(Checked):
    _argument_group_name = "module selection and LoRA"
    selection_scope: str = field(default="vision", metadata=_help(f"Towers whose modules may be tuned: {', '.join(SCOPES)}."))
    top_k_modules: int = field(default=8, metadata=_help("Number of modules tuned, best relative Fisher score first."))
    fisher_samples: int = field(default=64, metadata=_help("Forget and retain images each used to score modules."))
    lora_r: int = field(default=8, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=16, metadata=_help("LoRA scaling alpha."))
    lora_dropout: float = field(default=0.0, metadata=_help("LoRA dropout."))

    def check(self):
        choice(self, "selection_scope", tuple(SCOPES))
        _positive(self, "top_k_modules", "fisher_samples", "lora_r", "lora_alpha")
        require(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "in [0, 1)")


@dataclass
class AblationArguments(Checked):
    _argument_group_name = "ablations (each switches one component off)"
    no_layer_selection: bool = field(default=False, metadata=_help("Tune every candidate module, not the top relative-Fisher ones."))
    no_lora: bool = field(default=False, metadata=_help("Fully fine-tune the selected modules instead of LoRA adapters."))
    no_distill: bool = field(default=False, metadata=_help("No teacher distillation terms (every distillation weight is 0)."))
    no_remind: bool = field(default=False, metadata=_help("Skip the remind stage."))
    no_restore: bool = field(default=False, metadata=_help("Keep the unlearned weights (soup weight 1)."))


# ---- what the trainers read (mixed into their TrainingArguments subclasses) -----------------------------------

@dataclass
class DistillArguments(Checked):
    _argument_group_name = "distillation from the frozen original (every stage)"
    kd_temperature: float = field(default=2.0, metadata=_help("Temperature of the logit KL to the teacher."))
    retain_kd_weight: float = field(default=1.0, metadata=_help("Logit KD weight on retain images."))
    other_kd_weight: float = field(default=1.0, metadata=_help("Logit KD weight on other-class images.", aliases=["--anchor_kd_weight"]))
    embed_distill_weight: float = field(default=1.0, metadata=_help("Embedding distillation weight (1 - cos to the teacher) on retain and other-class images."))
    proxy_weight: float = field(default=0.5, metadata=_help("Embedding distillation weight on mixup proxy images (0 disables)."))
    text_distill_weight: float = field(default=1.0, metadata=_help("Text-embedding distillation weight on the prompt bank, when the text tower trains."))

    def check(self):
        _positive(self, "kd_temperature")
        _non_negative(self, "retain_kd_weight", "other_kd_weight", "embed_distill_weight", "proxy_weight", "text_distill_weight")


DISTILL_WEIGHTS = ("retain_kd_weight", "other_kd_weight", "embed_distill_weight", "proxy_weight", "text_distill_weight")


@dataclass
class ForgetObjective(Checked):
    """The forget term: the forget stage's objective and the remind stage's guard."""

    forget_loss: str = field(default="teacher_others", metadata=_help(
        "Forget objective: similarity (minimise forget image-text cosine), margin (the true class loses to the best other "
        "by a margin), teacher_others (match the teacher among the other classes)."))
    forget_margin: float = field(default=2.0, metadata=_help("Logit margin for --forget_loss margin."))
    forget_temperature: float = field(default=1.0, metadata=_help("Temperature of the target for --forget_loss teacher_others."))

    def check(self):
        choice(self, "forget_loss", FORGET_LOSSES)
        _non_negative(self, "forget_margin")
        _positive(self, "forget_temperature")


@dataclass
class ForgetWeight(Checked):
    forget_weight: float = field(default=1.0, metadata=_help("Weight of the forget term against the keep terms (the method's and the baselines')."))

    def check(self):
        _positive(self, "forget_weight")


@dataclass
class RemindObjective(Checked):
    ema_decay: float = field(default=0.9, metadata=_help("Remind-stage EMA decay of the weights (0: no EMA)."))
    contrastive_weight: float = field(default=1.0, metadata=_help("Weight of the contrastive loss on retain images and their class text."))
    other_contrastive_weight: float = field(default=3.0, metadata=_help(
        "Weight of the same contrastive loss on other-class images, so reminding the siblings does not pull other classes "
        "toward the forget class (0: retain images only).", aliases=["--anchor_contrastive_weight"]))
    forget_guard_weight: float = field(default=3.0, metadata=_help("Weight of the forget term kept while reminding, so the subgroup stays forgotten (0: plain reminding)."))

    def check(self):
        require(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "in [0, 1)")
        _non_negative(self, "contrastive_weight", "other_contrastive_weight", "forget_guard_weight")


@dataclass
class ScrubArguments(Checked):
    scrub_alpha: float = field(default=1.0, metadata=_help("SCRUB: weight of the retain keep-loss in its min steps (KD to the teacher has weight 1)."))
    scrub_max_fraction: float = field(default=2 / 3, metadata=_help("SCRUB: leading fraction of the steps in which every other step is a max step."))

    def check(self):
        _non_negative(self, "scrub_alpha")
        require(0 <= self.scrub_max_fraction <= 1, "scrub_max_fraction", self.scrub_max_fraction, "in [0, 1]")


@dataclass
class SalUnArguments(Checked):
    saliency_fraction: float = field(default=0.5, metadata=_help("SalUn: fraction of trainable weight entries (largest |grad| of the forget loss) it updates."))

    def check(self):
        require(0 < self.saliency_fraction <= 1, "saliency_fraction", self.saliency_fraction, "in (0, 1]")


@dataclass
class CLIPEraseArguments(Checked):
    consistency_weight: float = field(default=1.0, metadata=_help("CLIPErase: weight of logit KD to the original on retain images."))

    def check(self):
        _non_negative(self, "consistency_weight")


# ---- the stages' schedules and the restore step -------------------------------------------------------------

@dataclass
class ForgetArguments(ForgetWeight, ForgetObjective):
    _argument_group_name = "forget stage"
    forget_learning_rate: float = field(default=1e-3, metadata=_help("Forget-stage learning rate."))
    forget_epochs: float = field(default=6.0, metadata=_help("Forget-stage epochs over the forget set."))

    def check(self):
        _positive(self, "forget_learning_rate", "forget_epochs")


@dataclass
class RemindArguments(RemindObjective):
    _argument_group_name = "remind stage"
    remind_learning_rate: float = field(default=1e-4, metadata=_help("Remind-stage learning rate."))
    remind_epochs: float = field(default=1.0, metadata=_help("Remind-stage epochs over the retain set."))

    def check(self):
        _positive(self, "remind_learning_rate", "remind_epochs")


@dataclass
class BaselineArguments(ScrubArguments, SalUnArguments, CLIPEraseArguments):
    _argument_group_name = "baselines' own settings"


@dataclass
class RestoreArguments(Checked):
    _argument_group_name = "restore (soup of the unlearned and original weights)"
    alpha_grid: str = field(default="1.0,0.9,0.8,0.7,0.6,0.5,0.4", metadata=_help("Soup weights of the unlearned model tried on calibration data."))
    fa_target: float = field(default=0.01, metadata=_help("Highest calibration FA the chosen soup weight may have."))

    def check(self):
        require(0 <= self.fa_target <= 1, "fa_target", self.fa_target, "in [0, 1]")
        try:
            alphas = [float(a) for a in split_list(self.alpha_grid)]
        except ValueError:
            alphas = []
        require(bool(alphas) and all(0 <= a <= 1 for a in alphas), "alpha_grid", self.alpha_grid, "comma-separated numbers in [0, 1]")


@dataclass
class PrecisionArguments(Checked):
    _argument_group_name = "precision"
    precision: str = field(default="auto", metadata=_help("auto (bf16 autocast where the hardware is fast at it), bf16 or fp32; weights stay float32."))

    def check(self):
        choice(self, "precision", PRECISIONS)


@dataclass
class ComputeArguments(PrecisionArguments):
    _argument_group_name = "compute, checkpoints, logging and the Hub"
    save_steps: int = field(default=50, metadata=_help("Save a Trainer checkpoint of the running stage every N steps (0: none); the last one is kept."))
    resume_from_checkpoint: bool = field(default=False, metadata=_help("Continue an interrupted stage from its last checkpoint (finished stages are always reused)."))
    logging_steps: int = field(default=10, metadata=_help("Log loss terms every N steps."))
    report_to: str = field(default="none", metadata=_help("Trainer logging integrations, e.g. tensorboard."))
    push_to_hub: bool = field(default=False, metadata=_help("Upload the final model folder to the Hub once it is saved locally."))
    hub_model_id: str | None = field(default=None, metadata=_help("Hub repo id, e.g. 'me/clip-without-dog-sketches' (default: the output folder's name)."))
    hub_private_repo: bool = field(default=False, metadata=_help("Create the Hub repo as private."))
    hub_push_stages: bool = field(default=False, metadata=_help("Also upload the stage checkpoints under stages/."))

    def check(self):
        _non_negative(self, "save_steps")
        _positive(self, "logging_steps")


GROUPS = (RunArguments, DatasetArguments, DataArguments, MethodArguments, SelectionArguments, AblationArguments, DistillArguments,
          ForgetArguments, RemindArguments, BaselineArguments, RestoreArguments, ComputeArguments)


@dataclass
class UnlearnArguments(*reversed(GROUPS)):  # reversed: fields keep the groups' order
    """Every setting of a run (the groups above, flat): what ``--flags``, a YAML recipe and ``unlearn(**kwargs)`` fill."""

    @classmethod
    def from_dict(cls, values: dict) -> "UnlearnArguments":
        """Keyword arguments with the old names in ``ALIASES`` accepted; unknown names are refused, naming the valid ones."""
        values = {ALIASES.get(k, k): v for k, v in values.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; valid: {sorted(known)}")
        return cls(**values)

    @property
    def alphas(self) -> list[float]:
        return [float(a) for a in split_list(self.alpha_grid)]

