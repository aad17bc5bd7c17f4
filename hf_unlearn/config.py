"""Every setting of a run, each declared once with its help text and its check.

Settings come in groups. The groups a trainer reads (``DistillArguments``, ``ForgetObjective``, ...) are mixed into
that trainer's ``TrainingArguments`` subclass (``trainers/``), so a stage config and the command line share one
declaration. ``UnlearnArguments`` inherits every group: it is what the CLI, a YAML recipe and ``unlearn(**kwargs)``
fill, and ``cli.py`` builds ``--help`` from the groups, one section each.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .checks import Checked, ConfigError, check_model_path, choice, non_negative, positive, parse_retention_bars, require, split_list, with_help
from .spec import SubgroupSpec

# The choices settings take, declared with them: this module imports no torch, so --help and a bad value answer at once.
PRECISIONS = ("auto", "bf16", "fp32")
METHOD_NAME = "forget_remind_restore"
BASELINES = ("ga", "neggrad_plus", "ft", "rl", "scrub", "salun", "clip_erase")  # methods.METHODS: their trainers and grids
FORGET_LOSSES = ("similarity", "margin", "teacher_others")  # losses.py
LINEAR_KINDS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")  # an encoder block's Linear layers (CLIP and SigLIP)
SCOPES = {  # the towers whose encoder blocks a run may tune (selection.py)
    "vision": r"^vision_model\.encoder\.layers\.\d+\.",
    "text": r"^text_model\.encoder\.layers\.\d+\.",
    "both": r"^(vision|text)_model\.encoder\.layers\.\d+\.",
}
# old names that keep working on the command line, in YAML and as keyword arguments
ALIASES = {"anchor_kd_weight": "other_kd_weight", "anchor_contrastive_weight": "other_contrastive_weight"}


def check_model_paths(*names: str | None) -> None:
    """A typo in a local model path fails before any data loads, not after the stages it would have cost."""
    for name in names:
        if name:
            check_model_path(name)


# ---- what to unlearn, and where the result goes ----------------------------------------------------------------

@dataclass
class RunArguments(Checked):
    _argument_group_name = "run"
    model_name_or_path: str | None = field(default=None, metadata=with_help("CLIP checkpoint: local folder or Hub id. Default: the built-in demo model."))
    output_dir: str | None = field(default=None, metadata=with_help("Where the final model goes (default: runs/<dataset>-<forget>)."))
    overwrite_output_dir: bool = field(default=False, metadata=with_help("Replace an existing output folder, once the new run has finished."))

    def check(self):
        check_model_paths(self.model_name_or_path)


@dataclass
class DatasetArguments(Checked):
    """The dataset, the subgroup and the held-out data: what both a run and ``eval_cli`` read."""

    _argument_group_name = "data: the dataset, the subgroup and the held-out sets"
    dataset: str | None = field(default=None, metadata=with_help("Labelled image dataset: local Parquet folder, save_to_disk folder, or Hub id. Default: the demo world."))
    forget: str | None = field(default=None, metadata=with_help("Forget subgroup, AND-ed column=value pairs, e.g. 'label=dog,domain=sketch'."))
    retain: str | None = field(default=None, metadata=with_help("Retain subgroup in the same form (default: the forget rows' classes minus the forget rows)."))
    attributes: str | None = field(default=None, metadata=with_help("Computed attribute columns added before filtering (hf_unlearn.attributes), e.g. 'color'."))
    class_column: str = field(default="label", metadata=with_help("The ClassLabel column whose names form the zero-shot prompts."))
    zeroshot_datasets: str | None = field(default=None, metadata=with_help("Comma-separated held-out datasets for zero-shot evaluation (their eval split)."))
    train_split: str = field(default="train", metadata=with_help("Split the forget / retain / other / calibration images come from."))
    eval_split: str = field(default="test", metadata=with_help("Held-out split for the reported metrics."))
    max_eval_samples: int | None = field(default=None, metadata=with_help("Cap per held-out zero-shot dataset (stratified random subset; default all)."))
    eval_templates: str | None = field(default=None, metadata=with_help("'|'-separated prompt templates for the reported metrics (default: prompts.EVAL_TEMPLATES)."))
    seed: int = field(default=0, metadata=with_help("Seed for splits, sampling and training."))

    def check(self):
        for name in ("forget", "retain"):
            value = getattr(self, name)
            require(value is None or bool(value.strip()), name, value, "a spec 'column=value[,column=value...]', or left out")
            if value:
                SubgroupSpec.parse(value)  # a malformed spec fails here, before anything loads
        require(self.max_eval_samples is None or self.max_eval_samples >= 1, "max_eval_samples", self.max_eval_samples, ">= 1, or left out for all images")
        if self.attributes:
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
    calibration_fraction: float = field(default=0.15, metadata=with_help("Fraction of each training group held out for the restore and hyperparameter searches."))
    max_calibration: int = field(default=200, metadata=with_help("Cap on calibration images per group (the forget group's: --max_forget_calibration)."))
    max_forget_calibration: int = field(default=500, metadata=with_help(
        "Cap on calibration forget images, above --max_calibration so that on a large forget set the restore step's FA "
        "estimate resolves the default target of 0.01 (500 images: 5 expected errors at FA 0.01, where 200 give 2)."))
    max_other: int = field(default=1500, metadata=with_help("Cap on other-class training images."))
    max_forget: int | None = field(default=None, metadata=with_help("Cap on forget training images (a random subset; default all)."))
    max_retain: int | None = field(default=None, metadata=with_help("Cap on retain training images (a random subset; default all)."))
    train_templates: str | None = field(default=None, metadata=with_help("'|'-separated prompt templates for training and calibration (default: prompts.TRAIN_TEMPLATES)."))
    augment: bool = field(default=False, metadata=with_help("Random resized crops and flips of every training image."))
    batch_size: int = field(default=32, metadata=with_help("Primary-stream images per step and device (forget or retain)."))
    alternate_other_proxy: bool = field(default=True, metadata=with_help(
        "Each primary image brings an other-class image or a mixup proxy (a coin per image), not both: a step embeds 3 images "
        "per primary image, not 4 (--no_alternate_other_proxy for both)."))
    proxy_dataset: str | None = field(default=None, metadata=with_help(
        "A dataset of unlabelled images of another distribution (labels never read; its train split, else its only split) "
        "whose images join the proxy pool: the student keeps agreeing with the teacher on them. Never a --zeroshot_datasets set."))
    proxy_dataset_images: int = field(default=1024, metadata=with_help("Images drawn from --proxy_dataset (a seeded random subset)."))

    def check(self):
        require(0 < self.calibration_fraction < 1, "calibration_fraction", self.calibration_fraction, "in (0, 1)")
        positive(self, "max_calibration", "max_forget_calibration", "batch_size", "proxy_dataset_images")
        non_negative(self, "max_other")
        for name in ("max_forget", "max_retain"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, value, ">= 1, or left out for all images")


@dataclass
class MethodArguments(Checked):
    _argument_group_name = "method and hyperparameter search"
    method: str = field(default=METHOD_NAME, metadata=with_help(f"{METHOD_NAME} (this project's method) or a baseline: {', '.join(BASELINES)}."))
    hp_search: bool = field(default=False, metadata=with_help("Search learning rate x main weight on the calibration split, then train with the best."))
    hp_search_fraction: float = field(default=0.34, metadata=with_help("Fraction of the training budget each search candidate trains for."))
    hp_search_remind: bool = field(default=False, metadata=with_help("This project's method: each search candidate runs forget then remind, not the forget stage alone."))
    baseline_learning_rate: float | None = field(default=None, metadata=with_help("Baseline learning rate without --hp_search (default: the top of its grid)."))
    baseline_weight: float | None = field(default=None, metadata=with_help("Baseline main weight without --hp_search (default: its config field's value)."))

    def check(self):
        choice(self, "method", (METHOD_NAME, *BASELINES))
        require(0 < self.hp_search_fraction <= 1, "hp_search_fraction", self.hp_search_fraction, "in (0, 1]")
        require(self.baseline_learning_rate is None or self.baseline_learning_rate > 0, "baseline_learning_rate", self.baseline_learning_rate, "> 0")
        require(self.baseline_weight is None or self.baseline_weight >= 0, "baseline_weight", self.baseline_weight, ">= 0")


@dataclass
class SelectionArguments(Checked):
    _argument_group_name = "module selection and LoRA"
    selection_scope: str = field(default="vision", metadata=with_help(f"Towers whose modules may be tuned: {', '.join(SCOPES)}."))
    target_modules: str = field(default=",".join(LINEAR_KINDS), metadata=with_help(
        "Kinds of Linear layer the method may tune, by name suffix as peft's target_modules (comma-separated); the "
        "relative Fisher selection picks among them. Baselines tune every module of the scope."))
    first_block: int = field(default=0, metadata=with_help(
        "The method tunes only encoder blocks at and above this index; the earlier ones, whose features every image "
        "shares, stay the original's (0: every block)."))
    top_k_modules: int = field(default=8, metadata=with_help("Number of modules tuned first, best relative Fisher score first."))
    fill_modules: int = field(default=16, metadata=with_help(
        "Then more modules by score, up to this many in all, only in blocks the top_k_modules already reach (the backward "
        "pass goes no deeper, so they cost their adapters alone); at most top_k_modules: off."))
    fisher_samples: int = field(default=64, metadata=with_help("Forget and retain images each used to score modules."))
    lora_r: int = field(default=8, metadata=with_help("LoRA rank."))
    lora_alpha: int = field(default=16, metadata=with_help("LoRA scaling alpha."))
    lora_dropout: float = field(default=0.0, metadata=with_help("LoRA dropout."))

    def check(self):
        choice(self, "selection_scope", tuple(SCOPES))
        kinds = split_list(self.target_modules)
        require(bool(kinds) and set(kinds) <= set(LINEAR_KINDS), "target_modules", self.target_modules,
                f"comma-separated names from {list(LINEAR_KINDS)}")
        positive(self, "top_k_modules", "fisher_samples", "lora_r", "lora_alpha")
        require(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "in [0, 1)")
        require(self.fill_modules >= 0, "fill_modules", self.fill_modules, ">= 0")
        require(self.first_block >= 0, "first_block", self.first_block, ">= 0")


@dataclass
class AblationArguments(Checked):
    _argument_group_name = "ablations (each switches one component off)"
    no_layer_selection: bool = field(default=False, metadata=with_help("Tune every candidate module, not the top relative-Fisher ones."))
    no_lora: bool = field(default=False, metadata=with_help("Fully fine-tune the selected modules instead of LoRA adapters."))
    no_distill: bool = field(default=False, metadata=with_help("No teacher distillation terms (every distillation weight is 0)."))
    no_remind: bool = field(default=False, metadata=with_help("Skip the remind stage."))
    no_restore: bool = field(default=False, metadata=with_help("Keep the unlearned weights (soup weight 1)."))


# ---- what the trainers read (mixed into their TrainingArguments subclasses) -----------------------------------

@dataclass
class DistillArguments(Checked):
    _argument_group_name = "distillation from the frozen original (every stage)"
    kd_temperature: float = field(default=2.0, metadata=with_help("Temperature of the logit KL to the teacher."))
    retain_kd_weight: float = field(default=1.0, metadata=with_help("Logit KD weight on retain images."))
    other_kd_weight: float = field(default=1.0, metadata=with_help("Logit KD weight on other-class images.", aliases=["--anchor_kd_weight"]))
    embed_distill_weight: float = field(default=1.0, metadata=with_help("Embedding distillation weight (1 - cos to the teacher) on retain and other-class images."))
    proxy_weight: float = field(default=0.5, metadata=with_help("Embedding distillation weight on mixup proxy images (0 disables)."))
    proxy_vocab_kd_weight: float = field(default=0.0, metadata=with_help(
        "Logit KD weight on the proxy images over a generic vocabulary (hf_unlearn/vocabulary.txt, less every class name of "
        "the training and zero-shot data): keeps the teacher's ranking of concepts beyond the dataset's classes (0 disables)."))
    text_distill_weight: float = field(default=1.0, metadata=with_help("Text-embedding distillation weight on the prompt bank, when the text tower trains."))

    def check(self):
        positive(self, "kd_temperature")
        non_negative(self, "retain_kd_weight", "other_kd_weight", "embed_distill_weight", "proxy_weight", "text_distill_weight", "proxy_vocab_kd_weight")


DISTILL_WEIGHTS = ("retain_kd_weight", "other_kd_weight", "embed_distill_weight", "proxy_weight", "text_distill_weight", "proxy_vocab_kd_weight")


@dataclass
class ForgetObjective(Checked):
    """The forget term: the forget stage's objective and the remind stage's guard."""

    forget_loss: str = field(default="teacher_others", metadata=with_help(
        "Forget objective: similarity (minimise forget image-text cosine), margin (the true class loses to the best other "
        "by a margin), teacher_others (match the teacher among the other classes)."))
    forget_margin: float = field(default=2.0, metadata=with_help("Logit margin for --forget_loss margin."))
    forget_temperature: float = field(default=1.0, metadata=with_help("Temperature of the target for --forget_loss teacher_others."))
    forget_phrasings: int = field(default=0, metadata=with_help(
        "Also take the forget term (and the remind stage's guard) under this many single templates per step, drawn from 512 "
        "composed phrasings that share no template with the audit's bank or the reported templates (the vision tower's "
        "scope only: the heads are the frozen text tower's). 0: the training templates' ensemble only."))
    forget_phrasings_hardest: bool = field(default=False, metadata=with_help(
        "With --forget_phrasings > 0: take the phrasings under which the step's forget images are still recognised most "
        "(the student's mean true-class probability, over all 512), not a random draw: the term trains against the worst "
        "phrasings it can find."))

    def check(self):
        choice(self, "forget_loss", FORGET_LOSSES)
        non_negative(self, "forget_margin", "forget_phrasings")
        positive(self, "forget_temperature")


@dataclass
class ForgetImageObjective(Checked):
    """The forget stage's image-side term: class evidence leaves the forget images' own embeddings, whatever the text."""

    forget_image_weight: float = field(default=0.0, metadata=with_help(
        "Weight of the image-side forget term: 1 - cos of each forget image's embedding to the teacher's embedding of its "
        "nearest other-class training image that shares the forget spec's other conditions (e.g. another class's sketch; "
        "any other-class image when the spec names only a class). 0: off."))

    def check(self):
        non_negative(self, "forget_image_weight")


@dataclass
class TamperObjective(Checked):
    """The forget stage's tamper-resistance term: forgetting that a simulated relearning attack does not undo."""

    tamper_weight: float = field(default=0.0, metadata=with_help(
        "Weight of the tamper-resistance term (after TAR, Tamirisa et al. 2024): from the current weights, --tamper_steps Adam "
        "steps of a simulated attacker fine-tune the whole vision tower toward the class text of half the step's forget images "
        "and as many retain images; the forget term on the other half, at the attacked weights, adds its first-order gradient; "
        "the weights go back. 0: off."))
    tamper_steps: int = field(default=4, metadata=with_help("Simulated attacker's Adam steps per forget step (tamper-resistance term)."))
    tamper_learning_rate: float = field(default=1e-3, metadata=with_help("Simulated attacker's learning rate (tamper-resistance term)."))

    def check(self):
        non_negative(self, "tamper_weight")
        positive(self, "tamper_steps", "tamper_learning_rate")


@dataclass
class ForgetWeight(Checked):
    forget_weight: float = field(default=1.0, metadata=with_help("Weight of the forget term against the keep terms (the method's and the baselines')."))

    def check(self):
        positive(self, "forget_weight")


@dataclass
class RemindObjective(Checked):
    ema_decay: float = field(default=0.9, metadata=with_help("Remind-stage EMA decay of the weights (0: no EMA)."))
    contrastive_weight: float = field(default=1.0, metadata=with_help("Weight of the contrastive loss on retain images and their class text."))
    other_contrastive_weight: float = field(default=3.0, metadata=with_help(
        "Weight of the same contrastive loss on other-class images, so reminding the siblings does not pull other classes "
        "toward the forget class (0: retain images only).", aliases=["--anchor_contrastive_weight"]))
    forget_guard_weight: float = field(default=3.0, metadata=with_help("Weight of the forget term kept while reminding, so the subgroup stays forgotten (0: plain reminding)."))

    def check(self):
        require(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "in [0, 1)")
        non_negative(self, "contrastive_weight", "other_contrastive_weight", "forget_guard_weight")


@dataclass
class ScrubArguments(Checked):
    scrub_alpha: float = field(default=1.0, metadata=with_help("SCRUB: weight of the retain keep-loss in its min steps (KD to the teacher has weight 1)."))
    scrub_max_fraction: float = field(default=2 / 3, metadata=with_help("SCRUB: leading fraction of the steps in which every other step is a max step."))

    def check(self):
        non_negative(self, "scrub_alpha")
        require(0 <= self.scrub_max_fraction <= 1, "scrub_max_fraction", self.scrub_max_fraction, "in [0, 1]")


@dataclass
class SalUnArguments(Checked):
    saliency_fraction: float = field(default=0.5, metadata=with_help("SalUn: fraction of trainable weight entries (largest |grad| of the forget loss) it updates."))

    def check(self):
        require(0 < self.saliency_fraction <= 1, "saliency_fraction", self.saliency_fraction, "in (0, 1]")


@dataclass
class CLIPEraseArguments(Checked):
    consistency_weight: float = field(default=1.0, metadata=with_help("CLIPErase: weight of logit KD to the original on retain images."))

    def check(self):
        non_negative(self, "consistency_weight")


# ---- the stages' schedules and the restore step -------------------------------------------------------------

@dataclass
class ForgetArguments(TamperObjective, ForgetImageObjective, ForgetWeight, ForgetObjective):
    _argument_group_name = "forget stage"
    _positive = ("forget_learning_rate", "forget_epochs")
    forget_learning_rate: float = field(default=1e-3, metadata=with_help("Forget-stage learning rate."))
    forget_relative_learning_rate: float | None = field(default=None, metadata=with_help(
        "The forget-stage learning rate as a fraction of the RMS of the weight matrices the stage tunes; given, it replaces "
        "--forget_learning_rate (the rate used goes in the report). Adam moves each weight by about the rate whatever its "
        "size, so a fixed rate changes a model with smaller weights more: this one carries a setting between models."))
    forget_epochs: float = field(default=6.0, metadata=with_help(
        "Forget-stage epochs over the forget set (within --forget_min_steps and --forget_max_steps; see also --forget_check_steps)."))
    forget_min_steps: int = field(default=100, metadata=with_help(
        "Floor on the forget stage's steps whatever the forget set's size: a small subgroup gets as many updates as a large "
        "one needs, not a few epochs of a few batches (0: epochs alone)."))
    forget_max_steps: int = field(default=200, metadata=with_help(
        "Ceiling on the forget stage's steps (and so the length of its schedule), whatever the forget set's size (0: epochs alone)."))
    forget_check_steps: int = field(default=0, metadata=with_help(
        "Every N forget steps, measure the student's FA on the calibration forget images; the stage ends early once two checks "
        "in a row are at or below --forget_stop_fa (0, the default: never). Faster, but stopping at the first FA of 0 leaves "
        "forgetting that relearning brings back sooner (docs/BENCHMARKS.md, 'Speed')."))
    forget_stop_fa: float | None = field(default=None, metadata=with_help("Calibration FA at which the forget stage may end early (default: half of --fa_target)."))

    def check(self):
        non_negative(self, "forget_check_steps", "forget_min_steps", "forget_max_steps")
        require(self.forget_relative_learning_rate is None or self.forget_relative_learning_rate > 0,
                "forget_relative_learning_rate", self.forget_relative_learning_rate, "> 0, or left out")
        require(not self.forget_max_steps or self.forget_min_steps <= self.forget_max_steps, "forget_min_steps", self.forget_min_steps,
                f"<= --forget_max_steps ({self.forget_max_steps}), or --forget_max_steps 0")
        require(self.forget_stop_fa is None or 0 <= self.forget_stop_fa <= 1, "forget_stop_fa", self.forget_stop_fa, "in [0, 1], or left out")


@dataclass
class RemindArguments(RemindObjective):
    _argument_group_name = "remind stage"
    _positive = ("remind_learning_rate", "remind_epochs")
    remind_learning_rate: float = field(default=1e-4, metadata=with_help("Remind-stage learning rate."))
    remind_epochs: float = field(default=1.0, metadata=with_help("Remind-stage epochs over the retain set (at most: see --remind_max_steps)."))
    remind_max_steps: int = field(default=64, metadata=with_help(
        "Ceiling on the remind stage's steps whatever the retain set's size (0: epochs alone); at the default batch, "
        "one pass over up to 2,048 retain images."))

    def check(self):
        non_negative(self, "remind_max_steps")


@dataclass
class BaselineArguments(ScrubArguments, SalUnArguments, CLIPEraseArguments):
    _argument_group_name = "baselines' own settings"


@dataclass
class RetentionBars(Checked):
    """What the final model must keep: a run and ``eval_cli`` check the same bars."""

    _argument_group_name = "retention"
    retention_bars: str = field(default="RA=0.98,OA=0.99,ZS=0.99", metadata=with_help(
        "Fractions of the original's test accuracy the final model (eval_cli: --model) must keep: RA (the subgroup's "
        "siblings), OA (other classes), ZS (each held-out zero-shot set). A model under one is reported as having lost "
        "retention."))

    def check(self):
        try:
            parse_retention_bars(self.retention_bars)
        except ValueError as e:
            raise ConfigError(f"--retention_bars {self.retention_bars!r}: {e}") from None


@dataclass
class RestoreArguments(RetentionBars):
    _argument_group_name = "restore (soup of the unlearned and original weights)"
    alpha_grid: str = field(default="1.0,0.9,0.8,0.7,0.6,0.5,0.4", metadata=with_help("Soup weights of the unlearned model tried on calibration data."))
    fa_target: float = field(default=0.01, metadata=with_help("Highest FA the chosen soup weight may have on calibration data; a final "
                                                               "model above it on calibration or test data did not forget."))
    alpha_tolerance: float = field(default=0.0, metadata=with_help(
        "Calibration retention the restore may give up for depth: among the weights within this of the best retention (and "
        "under --fa_target), the largest. 0: the best retention, ties to the smaller weight. Each step down in alpha gives "
        "back relearning depth, and one image of 200 calibration images is 0.005 of retention."))
    retention_clip: bool = field(default=False, metadata=with_help(
        "Cap the RA and OA fractions at 1 before averaging them into the restore's calibration retention, as the "
        "composite score does, so that a gain on the retain set cannot pay for a loss on other classes."))
    allow_incomplete_forgetting: bool = field(default=False, metadata=with_help("Exit 0 even when the model did not forget (FA above "
                                                                                "--fa_target); the card and report still say so."))
    require_retention: bool = field(default=False, metadata=with_help(
        "Count a missed --retention_bars as a failed run: exit 3 and no Hub push, as for FA above --fa_target "
        "(--allow_incomplete_forgetting accepts it)."))

    def check(self):
        require(0 <= self.fa_target <= 1, "fa_target", self.fa_target, "in [0, 1]")
        require(0 <= self.alpha_tolerance <= 1, "alpha_tolerance", self.alpha_tolerance, "in [0, 1]")
        try:
            alphas = [float(a) for a in split_list(self.alpha_grid)]
        except ValueError:
            alphas = []
        require(bool(alphas) and all(0 <= a <= 1 for a in alphas), "alpha_grid", self.alpha_grid, "comma-separated numbers in [0, 1]")


@dataclass
class AuditArguments(Checked):
    _argument_group_name = "robustness audit (every run ends with it)"
    no_audit: bool = field(default=False, metadata=with_help("Skip the robustness audit."))
    require_deep_forgetting: bool = field(default=False, metadata=with_help(
        "Count an attack the audit finds shallow as not forgotten: exit 3 and no Hub push, as for FA above --fa_target "
        "(--allow_incomplete_forgetting accepts it)."))
    reference_model: str | None = field(default=None, metadata=with_help(
        "A model that never saw the subgroup (retrained without it): the audit's verdicts compare with it. Default: none "
        "(the demo world's own reference for the demo); verdicts then use the thresholds below."))
    audit_phrasings: str | None = field(default=None, metadata=with_help("File of the phrasing attack's templates, one a line (default: the package's bank)."))
    audit_relearn_steps: int = field(default=100, metadata=with_help("Relearning attack: AdamW steps on all parameters."))
    audit_relearn_learning_rate: float = field(default=1e-4, metadata=with_help("Relearning attack: learning rate."))
    audit_relearn_batch_size: int = field(default=32, metadata=with_help("Relearning attack: images per step."))
    audit_relearn_forget_images: int = field(default=16, metadata=with_help("Relearning attack (b): forget images mixed into the retain images."))
    audit_margin: float = field(default=0.02, metadata=with_help("With a reference: an attack's FA may exceed the reference's by this much."))
    audit_phrasing_fa: float = field(default=0.03, metadata=with_help("Without a reference: highest worst-phrasing FA called forgotten."))
    audit_relearn_fa: float = field(default=0.05, metadata=with_help("Without a reference: highest FA after a relearning attack called forgotten."))
    audit_probe_fraction: float = field(default=0.5, metadata=with_help(
        "Without a reference: highest probe accuracy on the subgroup, as a fraction of the original's, called forgotten."))
    _positive = ("audit_relearn_steps", "audit_relearn_learning_rate", "audit_relearn_batch_size")

    def check(self):
        non_negative(self, "audit_relearn_forget_images", "audit_margin", "audit_phrasing_fa", "audit_relearn_fa", "audit_probe_fraction")
        require(not (self.require_deep_forgetting and self.no_audit), "require_deep_forgetting", True,
                "used without --no_audit (it reads the audit's verdicts)")
        check_model_paths(self.reference_model)
        if self.audit_phrasings:
            from .audit.phrasings import load_bank

            require(os.path.isfile(self.audit_phrasings), "audit_phrasings", self.audit_phrasings, "an existing text file, one phrasing a line")
            load_bank(self.audit_phrasings)


@dataclass
class ModelPairArguments(Checked):
    """What ``eval_cli`` and ``python -m hf_unlearn.audit`` compare."""

    _argument_group_name = "models"
    model: str = field(metadata=with_help("The unlearned model: local folder or Hub id."))
    original: str = field(metadata=with_help("The model it was unlearned from."))
    json: str | None = field(default=None, metadata=with_help("Also write the figures to this JSON file."))

    def check(self):
        check_model_paths(self.model, self.original)
        if self.json:  # found now, not after the evaluation it would have lost
            folder = os.path.dirname(os.path.abspath(self.json))
            require(os.path.isdir(folder) and not os.path.isdir(self.json), "json", self.json, "a file path in an existing folder")


@dataclass
class PrecisionArguments(Checked):
    _argument_group_name = "precision"
    precision: str = field(default="auto", metadata=with_help("auto (bf16 autocast where the hardware is fast at it), bf16 or fp32; weights stay float32."))

    def check(self):
        choice(self, "precision", PRECISIONS)


@dataclass
class DeviceArguments(PrecisionArguments):
    """Precision and CPU threads: what a run, the audit and the evaluator all take."""
    _argument_group_name = "precision and threads"
    cpu_threads: int | None = field(default=None, metadata=with_help(
        "CPU threads per process for torch (default: the cores this process may run on, divided by the local processes; "
        "`accelerate launch` alone would leave 1)."))

    def check(self):
        require(self.cpu_threads is None or self.cpu_threads >= 1, "cpu_threads", self.cpu_threads, ">= 1, or left out for every core")


@dataclass
class ComputeArguments(DeviceArguments):
    _argument_group_name = "compute, checkpoints, logging and the Hub"
    save_steps: int = field(default=50, metadata=with_help("Save a Trainer checkpoint of the running stage every N steps (0: none); the last one is kept."))
    resume_from_checkpoint: bool = field(default=False, metadata=with_help("Continue an interrupted stage from its last checkpoint (finished stages are always reused)."))
    precompute_teacher: bool = field(default=True, metadata=with_help(
        "Embed each fixed training image with the frozen teacher once per run and look it up at every step (no effect with --augment, "
        "whose views are new each time); --no_precompute_teacher runs the teacher on every batch."))
    logging_steps: int = field(default=10, metadata=with_help("Log loss terms every N steps."))
    report_to: str = field(default="none", metadata=with_help("Trainer logging integrations, e.g. tensorboard."))
    push_to_hub: bool = field(default=False, metadata=with_help("Upload the final model folder to the Hub once it is saved locally."))
    hub_model_id: str | None = field(default=None, metadata=with_help("Hub repo id, e.g. 'me/clip-without-dog-sketches' (default: the output folder's name)."))
    hub_private_repo: bool = field(default=False, metadata=with_help("Create the Hub repo as private."))
    hub_push_stages: bool = field(default=False, metadata=with_help("Also upload the stage checkpoints under stages/."))

    def check(self):
        non_negative(self, "save_steps")
        positive(self, "logging_steps")


def _names(*groups) -> tuple[str, ...]:
    return tuple(f.name for g in groups for f in dataclasses.fields(g))


# What only one side reads: a baseline trains every module of the scope at --baseline_learning_rate, with no remind
# stage and no restore; the method never reads the baselines' settings. Either given to the other does nothing.
METHOD_ONLY = (
    *_names(ForgetObjective, ForgetImageObjective, TamperObjective, RemindObjective),
    "forget_learning_rate", "forget_relative_learning_rate", "forget_check_steps", "forget_stop_fa", "remind_learning_rate",
    "hp_search_remind", "target_modules", "first_block", "top_k_modules", "fill_modules", "lora_r", "lora_alpha", "lora_dropout",
    "no_layer_selection", "no_lora", "no_restore", "alpha_grid", "alpha_tolerance", "retention_clip",
)
BASELINE_ONLY = ("baseline_learning_rate", "baseline_weight", *_names(BaselineArguments))


GROUPS = (RunArguments, DatasetArguments, DataArguments, MethodArguments, SelectionArguments, AblationArguments, DistillArguments,
          ForgetArguments, RemindArguments, BaselineArguments, RestoreArguments, AuditArguments, ComputeArguments)


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

    def check(self):
        require(self.forget_relative_learning_rate is None or not self.hp_search, "forget_relative_learning_rate",
                self.forget_relative_learning_rate, "left out with --hp_search (its grid is of absolute rates)")
        require(not self.forget_phrasings or self.selection_scope == "vision", "forget_phrasings", self.forget_phrasings,
                f"0 with --selection_scope {self.selection_scope}: its phrasing heads come from a frozen text tower (scope vision)")

    def ignored_settings(self) -> list[str]:
        """Settings changed from their defaults that ``--method`` never reads (the method's with a baseline, the
        baselines' with the method): a run warns instead of silently doing without them."""
        names = BASELINE_ONLY if self.method == METHOD_NAME else METHOD_ONLY
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return [n for n in names if getattr(self, n) != defaults[n]]

    @property
    def alphas(self) -> list[float]:
        return [float(a) for a in split_list(self.alpha_grid)]

