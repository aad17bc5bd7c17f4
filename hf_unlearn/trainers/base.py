"""What every unlearning stage shares: the frozen teacher, distillation terms, extra-scalar logging, cards."""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .. import family, losses
from ..config import DISTILL_WEIGHTS, DistillArguments
from ..prompts import encode_images
from ..teacher import TeacherCache, prepare_teacher


@dataclass
class UnlearnConfig(DistillArguments, TrainingArguments):
    """What every stage's config shares: TrainingArguments and the distillation settings (the teacher is the frozen
    original model). A stage's own settings come from the groups its config mixes in (``hf_unlearn.config``)."""

    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: batches are nested dicts."})

    def check(self):
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must stay False for unlearning trainers")


def saved_checkpoint(args, state) -> str | None:
    """The Trainer checkpoint folder just written at this step (in a callback's on_save), where extra training state
    goes; None on processes that do not save."""
    folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
    return folder if args.should_save and os.path.isdir(folder) else None


class _EpochCallback(TrainerCallback):
    """Tells the collator which epoch it is drawing for (also right after a mid-epoch resume)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))


def is_text_side(name: str) -> bool:
    """Whether a parameter (by its name, PEFT-wrapped or not) belongs to the text tower or its projection."""
    return "text_model" in name or "text_projection" in name


# the distillation terms that read the teacher's image embeddings (the text term reads its prompt bank)
IMAGE_DISTILL_WEIGHTS = tuple(w for w in DISTILL_WEIGHTS if w != "text_distill_weight")


class UnlearnTrainer(Trainer):
    """A Trainer on a CLIP-family student with a frozen teacher; subclasses only define ``compute_loss``.

    ``class_embeds`` is the teacher's class prompt bank (unit-norm, ``[C, dim]``) and ``prompt_tokens`` the
    tokenised prompts behind it (``C * n_templates`` rows, class-major). The student is always called through
    ``forward`` so DDP/FSDP wrappers synchronise; its prompt bank is used only when its text tower trains.
    """

    stage_name = "unlearn"
    reads_proxies = False  # whether compute_loss embeds the "proxy" stream: the collator draws one only then

    def __init__(self, *args, teacher, class_embeds: torch.Tensor, prompt_tokens: dict, n_templates: int = 1,
                 teacher_cache: TeacherCache | None = None, phrasing_heads: torch.Tensor | None = None,
                 vocab_embeds: torch.Tensor | None = None, **kwargs):
        """``phrasing_heads``: the teacher's class head per composed phrasing (``[N, C, dim]``), which the forget
        term also runs under when ``forget_phrasings`` > 0."""
        super().__init__(*args, **kwargs)
        if getattr(self.args, "forget_phrasings", 0) and phrasing_heads is None:
            raise ValueError("forget_phrasings > 0 needs phrasing_heads, the teacher's class head per composed phrasing")
        self.phrasing_heads = None if phrasing_heads is None else phrasing_heads.to(self.args.device)
        if self.args.proxy_vocab_kd_weight and vocab_embeds is None:
            raise ValueError("proxy_vocab_kd_weight > 0 needs vocab_embeds, the teacher's head over the generic vocabulary")
        self.vocab_embeds = None if vocab_embeds is None else vocab_embeds.to(self.args.device)
        self.teacher = prepare_teacher(self.accelerator, teacher)
        self.teacher_cache = teacher_cache  # the teacher's embeddings of un-augmented stream rows, looked up by index
        self.class_embeds = class_embeds.to(self.args.device)
        self.prompt_tokens = {k: v.to(self.args.device) for k, v in prompt_tokens.items()}
        self.n_templates = n_templates
        self.logit_scale, self.logit_bias = family.logit_scale_and_bias(self.unwrap(self.teacher))
        self._teacher_text = None
        self._text_trains_memo: dict[int, bool] = {}
        self._terms: dict[str, list[float]] = defaultdict(list)
        if hasattr(self.data_collator, "set_epoch"):
            self.add_callback(_EpochCallback(self.data_collator))

    # ---- embeddings ----
    def unwrap(self, model):
        return self.accelerator.unwrap_model(model)

    @torch.no_grad()
    def teacher_images(self, pixel_values):
        return encode_images(self.unwrap(self.teacher), pixel_values)

    def _text_trains(self, model) -> bool:
        key = id(model)  # which parameters train is fixed for a stage: looked up once, not at every step
        if key not in self._text_trains_memo:
            self._text_trains_memo[key] = any(p.requires_grad for n, p in self.unwrap(model).named_parameters() if is_text_side(n))
        return self._text_trains_memo[key]

    def _teacher_embeds(self, inputs: dict, present: list[str], pixels: torch.Tensor) -> torch.Tensor:
        """The teacher's embeddings of the batch's images: looked up in the run's cache when every stream is a fixed
        stream with row indices (no augmentation), else one teacher forward."""
        cache = self.teacher_cache
        if cache is not None and all(n in cache and "index" in inputs[n] for n in present):
            return torch.cat([cache.lookup(n, inputs[n]["index"]) for n in present])
        return self.teacher_images(pixels)

    def embed_batch(self, model, inputs: dict, names: list[str], with_teacher: bool = True):
        """One student forward (images + prompt bank) and one teacher forward over the concatenated streams.

        Returns per-stream student and teacher embeddings, the student's class bank (the teacher's unless the
        text tower trains) and, when it trains, the text distillation term. ``with_teacher=False`` skips the
        teacher's image forward (its dict comes back empty) for objectives that never read it.
        """
        present = [n for n in names if n in inputs]
        sizes = [len(inputs[n]["pixel_values"]) for n in present]
        pixels = torch.cat([inputs[n]["pixel_values"] for n in present])
        text_trains = self._text_trains(model)
        # a frozen text tower still goes through forward (DDP needs the call), but on one prompt, not the whole bank
        tokens = self.prompt_tokens if text_trains else {k: v[:1] for k, v in self.prompt_tokens.items()}
        with self.accelerator.autocast():
            images, text = family.forward_embeds(model, pixels, tokens)
            teacher = self._teacher_embeds(inputs, present, pixels) if with_teacher else None
        s = dict(zip(present, images.split(sizes)))
        t = dict(zip(present, teacher.split(sizes))) if with_teacher else {}
        if not text_trains:
            return s, t, self.class_embeds, None
        if self._teacher_text is None:
            with torch.no_grad(), self.accelerator.autocast():
                self._teacher_text = family.forward_embeds(self.teacher, pixels[:1], self.prompt_tokens)[1]
        classes = F.normalize(text.view(len(self.class_embeds), self.n_templates, -1).mean(1), dim=-1)
        return s, t, classes, losses.embedding_distill_loss(text, self._teacher_text)

    def needs_teacher(self, forget_term: bool = False) -> bool:
        """Whether a step reads the teacher's image embeddings: a distillation weight above 0, or a forget term that
        aims at the teacher's beliefs (``forget_term``: the stage has one)."""
        a = self.args
        uses = forget_term and getattr(a, "forget_loss", None) == "teacher_others"
        return uses or any(getattr(a, w) > 0 for w in IMAGE_DISTILL_WEIGHTS)

    def teacher_logits(self, t: dict, name: str, head: torch.Tensor | None = None):
        """The teacher's logits of stream ``name`` under ``head`` (default: the training templates' bank); None when
        the step ran no teacher."""
        return self.logits(t[name], self.class_embeds if head is None else head) if name in t else None

    def step_phrasing_heads(self, forget_embeds: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """The ``forget_phrasings`` heads of this step: drawn without replacement, seeded by the run's seed and the step,
        so a resumed stage draws what the uninterrupted one would have; with ``forget_phrasings_hardest`` the ones under
        which ``forget_embeds`` are recognised most (a choice, not a gradient path)."""
        k = getattr(self.args, "forget_phrasings", 0)
        if not k:
            return []
        if getattr(self.args, "forget_phrasings_hardest", False):
            with torch.no_grad():
                recognised = losses.phrasing_recognition(forget_embeds.detach(), self.phrasing_heads, labels, self.logit_scale)
            return list(self.phrasing_heads[recognised.topk(min(k, len(recognised))).indices])
        g = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self.state.global_step)
        return list(self.phrasing_heads[torch.randperm(len(self.phrasing_heads), generator=g)[:k].to(self.phrasing_heads.device)])

    def forget_term(self, s: dict, t: dict, class_embeds, labels) -> torch.Tensor:
        """``losses.forget_loss`` on the forget stream, averaged over the step's heads: the training templates' ensemble
        and the ``forget_phrasings`` single composed phrasings (each with the teacher's logits under the same head)."""
        a = self.args
        heads = [(class_embeds, None)] + [(h, h) for h in self.step_phrasing_heads(s["forget"], labels)]
        return sum(
            losses.forget_loss(a.forget_loss, s["forget"], self.logits(s["forget"], student_head), self.teacher_logits(t, "forget", teacher_head),
                               student_head, labels, margin=a.forget_margin, temperature=a.forget_temperature)
            for student_head, teacher_head in heads
        ) / len(heads)

    def keep_loss(self, model, logits, labels):
        """CLIP's softmax or SigLIP's sigmoid loss of images against their class text."""
        return family.keep_loss(self.unwrap(model), logits, labels, self.logit_bias)

    def logits(self, embeds, class_embeds):
        return losses.class_logits(embeds, class_embeds, self.logit_scale)

    def distill_terms(self, s: dict, t: dict, class_embeds) -> dict[str, torch.Tensor]:
        """KD + embedding distillation on whatever of retain / other / proxy the batch carries."""
        a, terms = self.args, {}
        for name, kd_weight in (("retain", a.retain_kd_weight), ("other", a.other_kd_weight)):
            if name in s:
                if kd_weight:
                    terms[f"kd_{name}"] = kd_weight * losses.kd_logit_loss(
                        self.logits(s[name], class_embeds), self.logits(t[name], self.class_embeds), a.kd_temperature
                    )
                if a.embed_distill_weight:
                    terms[f"embed_{name}"] = a.embed_distill_weight * losses.embedding_distill_loss(s[name], t[name])
        if "proxy" in s and a.proxy_weight:
            terms["embed_proxy"] = a.proxy_weight * losses.embedding_distill_loss(s["proxy"], t["proxy"])
        if "proxy" in s and a.proxy_vocab_kd_weight:
            terms["kd_proxy_vocab"] = a.proxy_vocab_kd_weight * losses.kd_logit_loss(
                self.logits(s["proxy"], self.vocab_embeds), self.logits(t["proxy"], self.vocab_embeds), a.kd_temperature
            )
        return terms

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The sum of the named loss terms; each is also kept for the next log line."""
        for k, v in terms.items():
            self._terms[k].append(float(v.detach()))
        return sum(terms.values())

    # ---- logging & saving ----
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last log (TRL style) to the Trainer's own log."""
        for k, v in self._terms.items():
            if v:
                logs[f"{self.stage_name}/{k}"] = sum(v) / len(v)
        self._terms.clear()
        super().log(logs, start_time)
