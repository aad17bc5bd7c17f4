"""The recipe's settings: one flat dataclass, so YAML files and ``--flags`` map onto it with HfArgumentParser."""
from __future__ import annotations

from dataclasses import dataclass, field

from .losses import FORGET_LOSSES
from .selection import SCOPES


def _split_list(value: str | None, sep: str = ",") -> list[str]:
    return [v.strip() for v in (value or "").split(sep) if v.strip()]


@dataclass
class UnlearnArguments:
    # ---- what to unlearn ----
    model_name_or_path: str | None = field(default=None, metadata={"help": "CLIP checkpoint: local folder or Hub id. Default: the built-in demo model."})
    dataset: str | None = field(default=None, metadata={"help": "Labelled image dataset: local Parquet folder, save_to_disk folder, or Hub id. Default: the demo world."})
    forget: str | None = field(default=None, metadata={"help": "Forget subgroup, AND-ed column=value pairs, e.g. 'label=dog,domain=sketch'."})
    retain: str | None = field(default=None, metadata={"help": "Retain subgroup in the same form (default: rows of the forget rows' classes minus the forget rows)."})
    attributes: str | None = field(default=None, metadata={"help": "Comma-separated computed attribute columns to add before filtering (hf_unlearn.attributes), e.g. 'color' for --forget label=automobile,color=red."})
    class_column: str = field(default="label", metadata={"help": "The ClassLabel column whose names form the zero-shot prompts."})
    zeroshot_datasets: str | None = field(default=None, metadata={"help": "Comma-separated held-out datasets for zero-shot evaluation (their eval split)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where the final model goes (default: runs/<dataset>-<forget>)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output folder (it is replaced only once the new run has finished)."})
    train_split: str = field(default="train", metadata={"help": "Split the forget/retain/calibration images come from."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for the reported metrics."})
    seed: int = field(default=0, metadata={"help": "Seed for splits, sampling and training."})

    # ---- data sizes ----
    calibration_fraction: float = field(default=0.15, metadata={"help": "Fraction of each training group held out for the restore search."})
    max_calibration: int = field(default=200, metadata={"help": "Cap on calibration images per group."})
    max_other: int = field(default=1500, metadata={"help": "Cap on other-class (anchor) training images."})
    max_forget: int | None = field(default=None, metadata={"help": "Cap on forget training images (a random subset; default all). Forget-stage steps grow with the forget set: a whole CIFAR-10 class is 4,250 images."})
    max_retain: int | None = field(default=None, metadata={"help": "Cap on retain training images (a random subset; default all); the remind stage walks them once per epoch."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap per held-out zero-shot dataset (stratified random subset); default all."})
    train_templates: str | None = field(default=None, metadata={"help": "'|'-separated prompt templates for training/calibration (default: prompts.TRAIN_TEMPLATES)."})
    eval_templates: str | None = field(default=None, metadata={"help": "'|'-separated prompt templates for reported metrics (default: prompts.EVAL_TEMPLATES)."})

    # ---- method ----
    method: str = field(default="forget_remind_restore", metadata={"help": "forget_remind_restore (this project's method) or a baseline: ga, neggrad_plus, ft, rl, scrub, salun, clip_erase. Baselines fully fine-tune the --selection_scope modules for the same number of steps as the method."})
    hp_search: bool = field(default=False, metadata={"help": "Search learning rate x main weight on the calibration split (a fraction of the budget each), then train with the best."})
    hp_search_fraction: float = field(default=0.34, metadata={"help": "Fraction of the training budget each search candidate trains for."})
    hp_search_remind: bool = field(default=False, metadata={"help": "This project's method: each search candidate runs forget then remind (each for hp_search_fraction of its steps), so the search sees what reminding gives back; default: the forget stage alone."})
    baseline_learning_rate: float | None = field(default=None, metadata={"help": "Baseline learning rate without --hp_search (default: the top of the method's grid)."})
    baseline_weight: float | None = field(default=None, metadata={"help": "Baseline main weight without --hp_search (default: the method's config default)."})

    # ---- layer selection & LoRA ----
    selection_scope: str = field(default="vision", metadata={"help": f"Towers whose modules may be tuned: {sorted(SCOPES)}."})
    top_k_modules: int = field(default=8, metadata={"help": "Number of modules tuned, best relative Fisher score first."})
    fisher_samples: int = field(default=64, metadata={"help": "Forget and retain images each used to score modules."})
    no_layer_selection: bool = field(default=False, metadata={"help": "Ablation: tune every candidate module."})
    no_lora: bool = field(default=False, metadata={"help": "Ablation: fully fine-tune the selected modules instead of LoRA adapters."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})

    # ---- forget stage ----
    forget_loss: str = field(default="teacher_others", metadata={"help": f"Forget objective: {FORGET_LOSSES}."})
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the forget objective against the distillation terms."})
    forget_learning_rate: float = field(default=1e-3, metadata={"help": "Forget-stage learning rate."})
    forget_epochs: float = field(default=6.0, metadata={"help": "Forget-stage epochs over the forget set."})
    batch_size: int = field(default=32, metadata={"help": "Primary-stream images per step and device (forget or retain)."})
    no_distill: bool = field(default=False, metadata={"help": "Ablation: no teacher distillation terms."})
    retain_kd_weight: float = field(default=1.0, metadata={"help": "Logit KD weight on retain images."})
    anchor_kd_weight: float = field(default=1.0, metadata={"help": "Logit KD weight on other-class images."})
    embed_distill_weight: float = field(default=1.0, metadata={"help": "Embedding distillation weight on retain/other images."})
    augment: bool = field(default=False, metadata={"help": "Random resized crops and flips of every training image (forget, retain, anchor, proxy)."})
    proxy_weight: float = field(default=0.5, metadata={"help": "Embedding distillation weight on mixup proxy images (0 disables)."})

    # ---- remind stage ----
    no_remind: bool = field(default=False, metadata={"help": "Ablation: skip the remind stage."})
    remind_learning_rate: float = field(default=1e-4, metadata={"help": "Remind-stage learning rate."})
    remind_epochs: float = field(default=1.0, metadata={"help": "Remind-stage epochs over the retain set."})
    ema_decay: float = field(default=0.9, metadata={"help": "Remind-stage EMA decay (0: no EMA)."})
    forget_guard_weight: float = field(default=3.0, metadata={"help": "Weight of the forget term kept during reminding, so reminding the siblings does not bring the subgroup back (0: plain reminding; 3 chosen on calibration, docs/BENCHMARKS.md)."})
    anchor_contrastive_weight: float = field(default=3.0, metadata={"help": "Remind-stage contrastive loss on other-class images too, so the reminded siblings do not pull other classes toward the forget class (0: retain images only)."})

    # ---- restore ----
    no_restore: bool = field(default=False, metadata={"help": "Ablation: keep the unlearned weights (alpha = 1)."})
    alpha_grid: str = field(default="1.0,0.9,0.8,0.7,0.6,0.5,0.4", metadata={"help": "Soup weights of the unlearned model tried on calibration data."})
    fa_target: float = field(default=0.01, metadata={"help": "Highest calibration FA the chosen soup weight may have."})

    # ---- compute ----
    precision: str = field(default="auto", metadata={"help": "auto (bf16 autocast where the hardware is fast at it), bf16 or fp32; weights stay float32."})

    # ---- checkpoints & the Hub ----
    save_steps: int = field(default=50, metadata={"help": "Save a Trainer checkpoint of the running stage every N steps (0: none); the last one is kept."})
    resume_from_checkpoint: bool = field(default=False, metadata={"help": "Continue an interrupted stage from its last checkpoint (finished stages are always reused)."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the final model folder to the Hub once it is saved locally."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id, e.g. 'me/clip-without-dog-sketches' (default: the output folder's name)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    hub_push_stages: bool = field(default=False, metadata={"help": "Also upload the stage checkpoints under stages/ (left out by default)."})

    # ---- logging ----
    logging_steps: int = field(default=10, metadata={"help": "Log loss terms every N steps."})
    report_to: str = field(default="none", metadata={"help": "Trainer logging integrations, e.g. tensorboard."})

    def __post_init__(self):
        if self.selection_scope not in SCOPES:
            raise ValueError(f"selection_scope must be one of {sorted(SCOPES)}, got {self.selection_scope!r}")
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {FORGET_LOSSES}, got {self.forget_loss!r}")
        if not 0 < self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction must be in (0, 1), got {self.calibration_fraction}")
        for name in ("max_forget", "max_retain"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset for all images), got {getattr(self, name)}")
        if self.top_k_modules < 1 or self.batch_size < 1 or self.fisher_samples < 1:
            raise ValueError("top_k_modules, batch_size and fisher_samples must be >= 1")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        alphas = self.alphas
        if not alphas or any(not 0 <= a <= 1 for a in alphas):
            raise ValueError(f"alpha_grid must be comma-separated numbers in [0, 1], got {self.alpha_grid!r}")
        from .attributes import ATTRIBUTES

        unknown = [a for a in self.attribute_list if a not in ATTRIBUTES]
        if unknown:
            raise ValueError(f"unknown attributes {unknown}; available: {sorted(ATTRIBUTES)}")
        from .methods import METHODS

        if self.method != "forget_remind_restore" and self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choices: forget_remind_restore, {', '.join(METHODS)}")
        if not 0 < self.hp_search_fraction <= 1:
            raise ValueError(f"hp_search_fraction must be in (0, 1], got {self.hp_search_fraction}")
        if self.save_steps < 0:
            raise ValueError(f"save_steps must be >= 0, got {self.save_steps}")
        if not 0 <= self.fa_target <= 1:
            raise ValueError(f"fa_target must be in [0, 1], got {self.fa_target}")

    @property
    def alphas(self) -> list[float]:
        try:
            return [float(a) for a in _split_list(self.alpha_grid)]
        except ValueError:
            raise ValueError(f"alpha_grid must be comma-separated numbers, got {self.alpha_grid!r}") from None

    @property
    def attribute_list(self) -> list[str]:
        return _split_list(self.attributes)

    @property
    def zeroshot_list(self) -> list[str]:
        return _split_list(self.zeroshot_datasets)
