"""The baseline unlearning methods: their losses on hand-made tensors, and their trainers on the tiny CLIP."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from hf_unlearn import losses
from hf_unlearn.config import BASELINES
from hf_unlearn.data import ImageSet, IndexDataset, UnlearningCollator
from hf_unlearn.methods import METHODS, Method
from hf_unlearn.teacher import frozen_copy
from hf_unlearn.trainers import (
    GAConfig, GATrainer, RLConfig, RLTrainer, SalUnConfig, SalUnTrainer, SCRUBConfig, SCRUBTrainer, saliency_mask,
    UnlearnConfig, UnlearnTrainer,
)

CLASSES = 3


# ---- losses -----------------------------------------------------------------------------------------------

def test_gradient_ascent_is_minus_cross_entropy():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]), torch.tensor([0, 1])
    assert torch.allclose(losses.gradient_ascent_loss(logits, labels), -F.cross_entropy(logits, labels))
    # minimising it lowers the true-class logit
    logits.requires_grad_(True)
    losses.gradient_ascent_loss(logits, labels).backward()
    assert logits.grad[0, 0] > 0 and logits.grad[1, 1] > 0


def test_random_other_labels_never_true_cover_all_others_and_are_seeded():
    labels = torch.randint(5, (2000,), generator=torch.Generator().manual_seed(0))
    draw = lambda seed: losses.random_other_labels(labels, 5, torch.Generator().manual_seed(seed))  # noqa: E731
    wrong = draw(7)
    assert not (wrong == labels).any() and wrong.min() >= 0 and wrong.max() < 5
    assert torch.equal(wrong, draw(7)) and not torch.equal(wrong, draw(8))
    for c in range(5):  # uniform over the 4 other classes
        counts = torch.bincount(wrong[labels == c], minlength=5).float()
        assert counts[c] == 0 and (counts.sum() - counts).min() > 0
        others = counts[torch.arange(5) != c] / counts.sum()
        assert (others - 0.25).abs().max() < 0.1
    with pytest.raises(ValueError, match="at least 2"):
        losses.random_other_labels(labels, 1, torch.Generator())


def test_random_label_loss_is_cross_entropy_to_the_given_labels():
    logits, wrong = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([1, 0])
    assert torch.allclose(losses.random_label_loss(logits, wrong), F.cross_entropy(logits, wrong))
    toward_wrong = torch.tensor([[0.0, 3.0, 0.0], [3.0, 0.0, 0.0]])
    assert losses.random_label_loss(toward_wrong, wrong) < losses.random_label_loss(logits, wrong)


def test_scrub_max_loss_is_minus_kd_and_zero_at_the_teacher():
    teacher = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    student = teacher + torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    assert losses.scrub_max_loss(teacher, teacher, 2.0).abs() < 1e-6
    assert torch.allclose(losses.scrub_max_loss(student, teacher, 2.0), -losses.kd_logit_loss(student, teacher, 2.0))
    assert losses.scrub_max_loss(student, teacher, 2.0) < 0


def test_clip_erase_forget_loss_is_the_true_class_cosine():
    bank = F.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.tensor([2, 0])
    assert torch.allclose(losses.clip_erase_forget_loss(bank[labels], bank, labels), torch.tensor(1.0))
    assert torch.allclose(losses.clip_erase_forget_loss(-bank[labels], bank, labels), torch.tensor(-1.0))


# ---- registry ---------------------------------------------------------------------------------------------

def test_registry_lists_the_baselines_with_valid_grids():
    assert set(METHODS) == {"ga", "neggrad_plus", "ft", "rl", "scrub", "salun", "clip_erase"}
    assert tuple(METHODS) == BASELINES  # what --method accepts, checked without importing the trainers
    for name, m in METHODS.items():
        assert m.name == name and m.primary in ("forget", "retain") and m.doc
        assert issubclass(m.config, UnlearnConfig) and issubclass(m.trainer, UnlearnTrainer)
        fields = {f.name for f in dataclasses.fields(m.config)}
        assert m.weight_field is None or m.weight_field in fields
        assert len(m.grid()) == len(m.learning_rates) * max(1, len(m.weights))
    assert METHODS["ft"].primary == "retain" and METHODS["salun"].needs_saliency
    assert sum(m.needs_saliency for m in METHODS.values()) == 1
    with pytest.raises(ValueError, match="no field"):
        Method("x", GATrainer, GAConfig, "forget", "nope", (1e-5,), (1.0,))
    with pytest.raises(ValueError, match="primary"):
        Method("x", GATrainer, GAConfig, "other", None, (1e-5,))


@pytest.mark.parametrize("cls, bad", [
    (RLConfig, {"forget_weight": 0.0}), (SCRUBConfig, {"scrub_alpha": -1.0}), (SCRUBConfig, {"scrub_max_fraction": 1.5}),
    (SalUnConfig, {"saliency_fraction": 0.0}), (SalUnConfig, {"weight_decay": 0.01}),
])
def test_configs_reject_bad_values(tmp_path, cls, bad):
    with pytest.raises(ValueError):
        cls(output_dir=str(tmp_path), use_cpu=True, **bad)


# ---- trainers ---------------------------------------------------------------------------------------------

def streams(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: ImageSet(torch.randn(n, 3, 16, 16, generator=g), torch.randint(CLASSES, (n,), generator=g))  # noqa: E731
    return {"forget": mk(), "retain": mk(), "other": mk()}


def class_bank(model):
    torch.manual_seed(1)
    return F.normalize(torch.randn(CLASSES, model.config.projection_dim), dim=-1)


def prompt_tokens():
    ids = torch.arange(CLASSES * 4).view(CLASSES, 4) % 60 + 3
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def freeze_text(model):
    """As in the pipeline's vision scope: the fixed bank is the class text."""
    model.text_model.requires_grad_(False)
    model.text_projection.requires_grad_(False)
    return model


def build(cls, config, model, tmp_path, primary="forget", data=None, lr=5e-2, teacher=None, **kw):
    """A trainer as the pipeline builds one (4 images a step, 2 epochs of 8); ``saliency_mask`` goes to SalUn."""
    extra = {k: kw.pop(k) for k in ("saliency_mask",) if k in kw}
    args = config(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=kw.pop("epochs", 2), learning_rate=lr,
                  save_strategy="no", use_cpu=True, logging_steps=1, disable_tqdm=True, **kw)
    data = data or streams()
    teacher = teacher if teacher is not None else frozen_copy(model)
    collator = UnlearningCollator(primary, data)
    return cls(model=model, args=args, train_dataset=IndexDataset(len(data[primary])), data_collator=collator, teacher=teacher,
               class_embeds=class_bank(model), prompt_tokens=prompt_tokens(), **extra)


@torch.no_grad()
def forget_logits(model, images: ImageSet, bank):
    emb = F.normalize(model.get_image_features(pixel_values=images.pixel_values).pooler_output, dim=-1)
    return model.logit_scale.exp() * emb @ bank.t()


def forget_ce(model, images, bank):
    return float(F.cross_entropy(forget_logits(model, images, bank), images.labels))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_two_steps_and_leaves_the_teacher_alone(tiny_clip, tmp_path, name):
    m = METHODS[name]
    freeze_text(tiny_clip)
    teacher = frozen_copy(tiny_clip)
    before_teacher, before = snapshot(teacher), snapshot(tiny_clip)
    kw = {"max_steps": 2, m.weight_field: m.weights[-1]} if m.weight_field else {"max_steps": 2}
    if m.needs_saliency:
        f = streams()["forget"]
        kw["saliency_mask"] = saliency_mask(tiny_clip, f.pixel_values, f.labels, class_bank(tiny_clip), 10.0)
    trainer = build(m.trainer, m.config, tiny_clip, tmp_path, primary=m.primary, teacher=teacher, lr=1e-3, **kw)
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(torch.equal(before_teacher[k], v) for k, v in snapshot(teacher).items())
    assert any(not torch.equal(before[k], v) for k, v in snapshot(tiny_clip).items())
    logged = {k for row in trainer.state.log_history for k in row}
    assert any(k.startswith(f"{name}/") for k in logged)


def test_ga_raises_the_forget_cross_entropy(tiny_clip, tmp_path):
    freeze_text(tiny_clip)
    s, bank = streams(), class_bank(tiny_clip)
    before = forget_ce(tiny_clip, s["forget"], bank)
    trainer = build(GATrainer, GAConfig, tiny_clip, tmp_path, data=s, lr=1e-2)
    trainer.train()
    assert forget_ce(tiny_clip, s["forget"], bank) > before + 0.1
    assert {"ga/ascent", "ga/forget_acc"} <= {k for row in trainer.state.log_history for k in row}


def _forget_kl(student, teacher, images, bank, t=2.0):
    return float(losses.kd_logit_loss(forget_logits(student, images, bank), forget_logits(teacher, images, bank), t))


def test_scrub_max_step_raises_the_forget_kl_to_the_teacher(tiny_clip, tmp_path):
    freeze_text(tiny_clip)
    teacher = frozen_copy(tiny_clip)
    with torch.no_grad():  # at student == teacher the KL's gradient is zero: start slightly off
        for p in tiny_clip.vision_model.parameters():
            p.add_(1e-2 * torch.randn_like(p))
    s, bank = streams(), class_bank(tiny_clip)
    before = _forget_kl(tiny_clip, teacher, s["forget"], bank)
    trainer = build(SCRUBTrainer, SCRUBConfig, tiny_clip, tmp_path, data=s, teacher=teacher, lr=1e-2, max_steps=1)
    trainer.state.max_steps = 1
    assert trainer.is_max_step()
    trainer.train()
    assert _forget_kl(tiny_clip, teacher, s["forget"], bank) > 2 * before
    assert "scrub/max" in {k for row in trainer.state.log_history for k in row}


def test_scrub_alternates_max_and_min_steps_then_only_min(tiny_clip, tmp_path):
    freeze_text(tiny_clip)
    trainer = build(SCRUBTrainer, SCRUBConfig, tiny_clip, tmp_path, lr=1e-3, epochs=2, scrub_max_fraction=0.5)

    def phases(max_steps):
        trainer.state.max_steps, out = max_steps, []
        for step in range(max_steps):
            trainer.state.global_step = step
            out.append(trainer.is_max_step())
        return out

    assert phases(4) == [True, False, False, False]  # 2 epochs of 8 images, 4 a step
    assert phases(6) == [True, False, True, False, False, False]
    trainer.state.global_step = 0
    trainer.train()  # 4 steps: max, min, min, min
    logged = {k for row in trainer.state.log_history for k in row}
    assert {"scrub/max", "scrub/kd_retain", "scrub/keep"} <= logged


def test_saliency_mask_keeps_the_top_fraction_and_leaves_grads_alone(tiny_clip):
    freeze_text(tiny_clip)
    f = streams()["forget"]
    mask = saliency_mask(tiny_clip, f.pixel_values, f.labels, class_bank(tiny_clip), 10.0, fraction=0.3, batch_size=3)
    trainable = {n for n, p in tiny_clip.named_parameters() if p.requires_grad}
    assert set(mask) == trainable
    total = sum(v.numel() for v in mask.values())
    kept = sum(int(v.sum()) for v in mask.values())
    assert abs(kept / total - 0.3) < 0.01
    assert not mask["logit_scale"].any()  # not in the forget loss: no saliency
    assert all(p.grad is None for p in tiny_clip.parameters())
    # chunking does not change the answer: the gradient is of the mean over all forget images
    whole = saliency_mask(tiny_clip, f.pixel_values, f.labels, class_bank(tiny_clip), 10.0, fraction=0.3, batch_size=8)
    assert sum(int((whole[k] != mask[k]).sum()) for k in mask) <= 0.001 * total


def test_salun_updates_only_the_salient_weights(tiny_clip, tmp_path):
    freeze_text(tiny_clip)
    s = streams()
    mask = saliency_mask(tiny_clip, s["forget"].pixel_values, s["forget"].labels, class_bank(tiny_clip), 10.0, fraction=0.5)
    before = {n: p.detach().clone() for n, p in tiny_clip.named_parameters()}
    trainer = build(SalUnTrainer, SalUnConfig, tiny_clip, tmp_path, data=s, lr=1e-2, saliency_mask=mask)
    trainer.train()
    after = dict(tiny_clip.named_parameters())
    moved = frozen = 0
    for name, m in mask.items():
        assert torch.equal(after[name].detach()[~m], before[name][~m]), name
        moved += int((after[name].detach()[m] != before[name][m]).sum())
        frozen += int((~m).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in mask.values()) and frozen > 0
    trainer.remove_mask()
    assert not trainer.mask_handles
    with pytest.raises(ValueError, match="does not match"):
        build(SalUnTrainer, SalUnConfig, tiny_clip, tmp_path, data=s, saliency_mask={k: v for k, v in list(mask.items())[1:]})


def known_forget(model, s, bank):
    """Make the forget set a separate domain (shifted pixels) that the model classifies correctly before
    unlearning, so that forgetting it is visible and does not fight the retain loss on identical images."""
    f = s["forget"]
    f.pixel_values += 1.5
    f.labels = forget_logits(model, f, bank).argmax(-1)
    return f


@pytest.mark.parametrize("cls, config", [(RLTrainer, RLConfig), (SalUnTrainer, SalUnConfig)])
def test_random_labels_make_the_model_forget_the_forget_set(tiny_clip, tmp_path, cls, config):
    freeze_text(tiny_clip)
    s, bank = streams(), class_bank(tiny_clip)
    f = known_forget(tiny_clip, s, bank)
    before = forget_ce(tiny_clip, f, bank)
    kw = {"saliency_mask": saliency_mask(tiny_clip, f.pixel_values, f.labels, bank, 10.0)} if cls is SalUnTrainer else {}
    build(cls, config, tiny_clip, tmp_path, data=s, lr=1e-3, **kw).train()
    accuracy = float((forget_logits(tiny_clip, f, bank).argmax(-1) == f.labels).float().mean())
    assert accuracy <= 0.25 and forget_ce(tiny_clip, f, bank) > before + 1.0


def test_rl_random_labels_are_reproducible_per_step(tiny_clip, tmp_path):
    trainer = build(RLTrainer, RLConfig, freeze_text(tiny_clip), tmp_path)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    draw = lambda: losses.random_other_labels(labels, CLASSES, trainer.step_generator())  # noqa: E731
    first = draw()
    assert torch.equal(first, draw())
    draws = set()
    for step in range(5):
        trainer.state.global_step = step
        draws.add(tuple(draw().tolist()))
    assert len(draws) > 1  # a new draw every step


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"ga"}))
def test_every_retain_side_term_sees_the_other_classes_too(tiny_clip, tmp_path, name):
    """A baseline's retain set is sibling subgroups + other classes: relabelling the anchor images changes its loss."""
    m = METHODS[name]
    freeze_text(tiny_clip)
    kw = {m.weight_field: m.weights[-1]} if m.weight_field else {}
    if m.needs_saliency:
        f = streams()["forget"]
        kw["saliency_mask"] = saliency_mask(tiny_clip, f.pixel_values, f.labels, class_bank(tiny_clip), 10.0)
    trainer = build(m.trainer, m.config, tiny_clip, tmp_path, primary=m.primary, **kw)
    if name == "scrub":
        trainer.state.global_step = 1  # a min step: the one with the retain terms
    batch = trainer.data_collator(list(range(4)))
    assert "other" in batch
    relabelled = {k: dict(v) for k, v in batch.items()}
    relabelled["other"]["labels"] = (batch["other"]["labels"] + 1) % CLASSES
    with torch.no_grad():
        a, b = trainer.compute_loss(tiny_clip, batch), trainer.compute_loss(tiny_clip, relabelled)
    assert not torch.allclose(a, b)


def test_ft_on_one_retain_class_keeps_the_other_classes_with_the_anchor_stream(tiny_clip, tmp_path):
    """Fine-tuning on the forget class's siblings alone drags other classes toward that class; the anchors hold them."""
    from hf_unlearn.trainers import FTConfig, FTTrainer

    freeze_text(tiny_clip)
    g = torch.Generator().manual_seed(3)
    n = 8
    retain = ImageSet(torch.randn(n, 3, 16, 16, generator=g), torch.zeros(n, dtype=torch.long))
    anchor = ImageSet(torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 2 + 1)
    bank = class_bank(tiny_clip)

    def anchor_prob_of_retain_class(data):
        model = copy.deepcopy(tiny_clip)
        build(FTTrainer, FTConfig, model, tmp_path / str(len(data)), primary="retain", data=data, lr=1e-2).train()
        return float(F.softmax(forget_logits(model, anchor, bank), -1)[:, 0].mean())

    assert anchor_prob_of_retain_class({"retain": retain, "other": anchor}) < anchor_prob_of_retain_class({"retain": retain}) - 0.05
