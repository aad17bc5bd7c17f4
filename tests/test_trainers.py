import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import CLIPModel

from hf_unlearn.data import ImageSet, IndexDataset, UnlearningCollator
from hf_unlearn.checks import ModelError
from hf_unlearn.selection import candidate_modules, relative_fisher_scores, select_modules, select_top
from hf_unlearn.teacher import frozen_copy
from hf_unlearn.trainers import ForgetConfig, ForgetTrainer, RemindConfig, RemindTrainer, ema_update


def streams(n=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: ImageSet(torch.randn(n, 3, 16, 16, generator=g), torch.randint(classes, (n,), generator=g))  # noqa: E731
    return {"forget": mk(), "retain": mk(), "other": mk()}


def class_bank(model, classes=3):
    torch.manual_seed(1)
    return F.normalize(torch.randn(classes, model.config.projection_dim), dim=-1)


def prompt_tokens(classes=3):
    """One tokenised prompt per class (the tiny config's vocabulary); the student's text tower reads them."""
    ids = torch.arange(classes * 4).view(classes, 4) % 60 + 3
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _args(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=5e-2, report_to="none",
               save_strategy="no", use_cpu=True, logging_steps=1, disable_tqdm=True, **kw)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("forget_loss", ["similarity", "margin", "teacher_others"])
def test_forget_trainer_moves_student_not_teacher_and_lowers_forget_similarity(tiny_clip, tmp_path, forget_loss):
    s = streams()
    teacher = frozen_copy(tiny_clip)
    bank = class_bank(tiny_clip)
    tiny_clip.text_model.requires_grad_(False)  # as in the pipeline (vision scope): the fixed bank is the class text
    tiny_clip.text_projection.requires_grad_(False)
    before_teacher = _params(teacher)
    f = s["forget"]

    def forget_similarity(m):
        with torch.no_grad():
            emb = F.normalize(m.get_image_features(pixel_values=f.pixel_values).pooler_output, dim=-1)
        return float((emb * bank[f.labels]).sum(-1).mean())

    sim_before = forget_similarity(tiny_clip)
    trainer = ForgetTrainer(
        model=tiny_clip, args=_args(ForgetConfig, tmp_path, forget_loss=forget_loss, forget_weight=5.0), train_dataset=IndexDataset(8),
        data_collator=UnlearningCollator("forget", s, proxy=True), teacher=teacher, class_embeds=bank, prompt_tokens=prompt_tokens(),
    )
    trainer.train()
    after_teacher = _params(teacher)
    assert all(torch.equal(before_teacher[k], after_teacher[k]) for k in before_teacher)
    assert any(not torch.equal(before_teacher[k], v) for k, v in _params(tiny_clip).items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    logged = {k for row in trainer.state.log_history for k in row}
    assert {"forget/forget", "forget/kd_retain", "forget/embed_other", "forget/embed_proxy"} <= logged
    if forget_loss == "similarity":
        assert forget_similarity(tiny_clip) < sim_before


def test_image_side_forget_term_pulls_each_forget_image_to_its_target_and_needs_them(tiny_clip, tmp_path):
    s = streams()
    teacher = frozen_copy(tiny_clip)
    bank = class_bank(tiny_clip)
    f = s["forget"]
    targets = F.normalize(torch.randn(len(f), tiny_clip.config.projection_dim, generator=torch.Generator().manual_seed(3)), dim=-1)

    def cos_to_target(m):
        with torch.no_grad():
            return float((F.normalize(m.get_image_features(pixel_values=f.pixel_values).pooler_output, dim=-1) * targets).sum(-1).mean())

    kw = dict(model=tiny_clip, train_dataset=IndexDataset(8), data_collator=UnlearningCollator("forget", s), teacher=teacher,
              class_embeds=bank, prompt_tokens=prompt_tokens())
    with pytest.raises(ValueError, match="forget_targets"):
        ForgetTrainer(args=_args(ForgetConfig, tmp_path, forget_image_weight=1.0), **kw)
    before = cos_to_target(tiny_clip)
    trainer = ForgetTrainer(args=_args(ForgetConfig, tmp_path, forget_image_weight=5.0, forget_weight=0.1, proxy_weight=0.0, max_steps=30),
                            forget_targets=targets, **kw)
    trainer.train()
    assert "forget/forget_image" in {k for row in trainer.state.log_history for k in row}
    assert cos_to_target(tiny_clip) > before + 0.1


@pytest.mark.parametrize("lora", [False, True])
def test_tamper_term_adds_the_first_order_gradient_at_attacked_weights_and_leaves_the_weights(tiny_clip, tmp_path, lora):
    s = streams()
    bank = class_bank(tiny_clip)
    teacher = frozen_copy(tiny_clip)
    model = tiny_clip.requires_grad_(False)
    if lora:
        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["vision_model.encoder.layers.1.mlp.fc1"]))
    else:
        model.vision_model.encoder.layers[1].mlp.fc1.requires_grad_(True)
    trainer = ForgetTrainer(model=model, args=_args(ForgetConfig, tmp_path, tamper_weight=2.0, tamper_steps=3, tamper_learning_rate=1e-2),
                            train_dataset=IndexDataset(8), data_collator=UnlearningCollator("forget", s), teacher=teacher,
                            class_embeds=bank, prompt_tokens=prompt_tokens())
    batch = trainer.data_collator(list(range(6)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    kept = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters() if p.requires_grad}
    for n, p in model.named_parameters():
        p.grad = kept[n].clone() if n in kept else None
    before = _params(model)

    # by hand: a copy attacked with Adam on every image-side parameter, then the forget term's gradient there
    attacked = copy.deepcopy(model)
    image_side = [p for n, p in attacked.named_parameters() if "text" not in n and "logit" not in n]
    for p in attacked.parameters():
        p.grad = None
    for p in image_side:
        p.requires_grad_(True)
    adam = torch.optim.Adam(image_side, lr=1e-2)
    pixels = torch.cat([batch["forget"]["pixel_values"][:3], batch["retain"]["pixel_values"][:3]])
    labels = torch.cat([batch["forget"]["labels"][:3], batch["retain"]["labels"][:3]])
    for _ in range(3):
        adam.zero_grad()
        emb = F.normalize(trainer.unwrap(attacked).get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        F.cross_entropy(trainer.logits(emb, bank), labels).backward()
        adam.step()
    adam.zero_grad()
    held = batch["forget"]["pixel_values"][3:]
    emb = {"forget": F.normalize(trainer.unwrap(attacked).get_image_features(pixel_values=held).pooler_output, dim=-1)}
    t = {"forget": trainer.teacher_images(held)}
    (2.0 * trainer.forget_term(emb, t, bank, batch["forget"]["labels"][3:])).backward()
    expected = {n: p.grad for n, p in attacked.named_parameters() if n in kept}

    term = trainer.tamper_gradient(model, batch)
    assert term > 0
    assert all(torch.equal(before[k], v) for k, v in _params(model).items())  # the attack is undone
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable
    for n, p in model.named_parameters():
        if n in kept:
            assert expected[n].abs().sum() > 0
            torch.testing.assert_close(p.grad, kept[n] + expected[n], rtol=1e-4, atol=1e-6)
        else:
            assert p.grad is None


def test_tamper_term_is_logged_and_the_stage_trains(tiny_clip, tmp_path):
    s = streams()
    tiny_clip.text_model.requires_grad_(False)
    tiny_clip.text_projection.requires_grad_(False)
    trainer = ForgetTrainer(model=tiny_clip, args=_args(ForgetConfig, tmp_path, tamper_weight=1.0, tamper_steps=2, max_steps=3),
                            train_dataset=IndexDataset(8), data_collator=UnlearningCollator("forget", s), teacher=frozen_copy(tiny_clip),
                            class_embeds=class_bank(tiny_clip), prompt_tokens=prompt_tokens())
    before = _params(tiny_clip)
    trainer.train()
    assert "forget/tamper" in {k for row in trainer.state.log_history for k in row}
    assert any(not torch.equal(before[k], v) for k, v in _params(tiny_clip).items())


def test_the_forget_term_averages_the_ensemble_and_the_steps_drawn_phrasings(tiny_clip, tmp_path):
    from hf_unlearn import losses

    s = streams()
    teacher = frozen_copy(tiny_clip)
    bank = class_bank(tiny_clip)
    heads = F.normalize(torch.randn(10, 3, tiny_clip.config.projection_dim, generator=torch.Generator().manual_seed(5)), dim=-1)
    kw = dict(model=tiny_clip, train_dataset=IndexDataset(8), data_collator=UnlearningCollator("forget", s), teacher=teacher,
              class_embeds=bank, prompt_tokens=prompt_tokens())
    with pytest.raises(ValueError, match="phrasing_heads"):
        ForgetTrainer(args=_args(ForgetConfig, tmp_path, forget_phrasings=3), **kw)
    g = torch.Generator().manual_seed(0)
    emb = {"forget": F.normalize(torch.randn(4, tiny_clip.config.projection_dim, generator=g), dim=-1)}
    t = {"forget": F.normalize(torch.randn(4, tiny_clip.config.projection_dim, generator=g), dim=-1)}
    labels = torch.tensor([0, 1, 2, 0])
    plain = ForgetTrainer(args=_args(ForgetConfig, tmp_path), **kw)

    def loss_under(trainer, head):
        return losses.forget_loss("teacher_others", emb["forget"], trainer.logits(emb["forget"], head), trainer.logits(t["forget"], head), head, labels)

    assert plain.step_phrasing_heads(emb["forget"], labels) == [] and torch.equal(plain.forget_term(emb, t, bank, labels), loss_under(plain, bank))
    trainer = ForgetTrainer(args=_args(ForgetConfig, tmp_path, forget_phrasings=3, max_steps=2), phrasing_heads=heads, **kw)
    drawn = trainer.step_phrasing_heads(emb["forget"], labels)
    assert len(drawn) == 3 and all(any(torch.equal(d, h) for h in heads) for d in drawn)
    assert all(torch.equal(a, b) for a, b in zip(drawn, trainer.step_phrasing_heads(emb["forget"], labels)))  # the step decides, not the call
    expected = (loss_under(trainer, bank) + sum(loss_under(trainer, h) for h in drawn)) / 4
    assert torch.allclose(trainer.forget_term(emb, t, bank, labels), expected)
    trainer.state.global_step = 1
    assert not all(torch.equal(a, b) for a, b in zip(drawn, trainer.step_phrasing_heads(emb["forget"], labels)))
    trainer.state.global_step = 0
    trainer.train()
    assert trainer.state.global_step == 2 and "forget/forget" in {k for row in trainer.state.log_history for k in row}


def test_the_hardest_phrasings_are_those_that_still_recognise_the_forget_images(tiny_clip, tmp_path):
    from hf_unlearn import losses

    dim = tiny_clip.config.projection_dim
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(4, dim, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 2, 0])
    heads = F.normalize(torch.randn(10, 3, dim, generator=g), dim=-1)
    heads[7] = F.normalize(torch.stack([images[[0, 3]].mean(0), images[1], images[2]]), dim=-1)  # each class's text on its images
    s = streams()
    kw = dict(model=tiny_clip, train_dataset=IndexDataset(8), data_collator=UnlearningCollator("forget", s), teacher=frozen_copy(tiny_clip),
              class_embeds=class_bank(tiny_clip), prompt_tokens=prompt_tokens(), phrasing_heads=heads)
    trainer = ForgetTrainer(args=_args(ForgetConfig, tmp_path, forget_phrasings=2, forget_phrasings_hardest=True), **kw)
    chosen = trainer.step_phrasing_heads(images, labels)
    top = losses.phrasing_recognition(images, heads, labels, trainer.logit_scale).topk(2).indices
    assert len(chosen) == 2 and all(torch.equal(c, heads[i]) for c, i in zip(chosen, top)) and int(top[0]) == 7
    none = ForgetTrainer(args=_args(ForgetConfig, tmp_path, forget_phrasings_hardest=True), **kw)
    assert none.step_phrasing_heads(images, labels) == []  # how to pick, when --forget_phrasings asks for some


def test_remind_trainer_saves_ema_weights(tiny_clip, tmp_path):
    s = streams()
    teacher = frozen_copy(tiny_clip)
    trainer = RemindTrainer(
        model=tiny_clip, args=_args(RemindConfig, tmp_path, ema_decay=0.5), train_dataset=IndexDataset(8),
        data_collator=UnlearningCollator("retain", s), teacher=teacher, class_embeds=class_bank(tiny_clip), prompt_tokens=prompt_tokens(),
    )
    start = [p.detach().clone() for p in tiny_clip.parameters()]
    ema_cb = [c for c in trainer.callback_handler.callbacks if type(c).__name__ == "_EMACallback"][0]
    trainer.train()
    # after training the model holds the EMA, which differs from the start and lags the raw weights
    assert all(torch.equal(p, e) for p, e in zip(ema_cb.params, ema_cb.ema))
    assert any(not torch.equal(a, b) for a, b in zip(start, tiny_clip.parameters()))
    logged = {k for row in trainer.state.log_history for k in row}
    assert {"remind/contrastive", "remind/forget_guard"} <= logged


def test_ema_update_math():
    ema, params = [torch.zeros(3)], [torch.ones(3)]
    ema_update(ema, params, decay=0.9)
    assert torch.allclose(ema[0], torch.full((3,), 0.1))
    ema_update(ema, params, decay=0.0)
    assert torch.equal(ema[0], params[0])


def test_lora_merge_gives_plain_clip_model(tiny_clip, tmp_path):
    targets = candidate_modules(tiny_clip, "vision")[:2]
    peft_model = get_peft_model(copy.deepcopy(tiny_clip), LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    merged = peft_model.merge_and_unload()
    assert type(merged) is CLIPModel
    merged.save_pretrained(tmp_path / "m")
    reloaded = CLIPModel.from_pretrained(tmp_path / "m")
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(reloaded.get_image_features(pixel_values=x).pooler_output, merged.get_image_features(pixel_values=x).pooler_output, atol=1e-5)
    assert not torch.allclose(reloaded.get_image_features(pixel_values=x).pooler_output, tiny_clip.get_image_features(pixel_values=x).pooler_output)


def test_fisher_scores_zero_for_unreachable_modules_and_deterministic(tiny_clip):
    s = streams(n=6)
    bank = class_bank(tiny_clip)
    modules = candidate_modules(tiny_clip, "both")
    args = (tiny_clip, lambda: bank, s["forget"].pixel_values, s["forget"].labels, s["retain"].pixel_values, s["retain"].labels, modules)
    ranking = relative_fisher_scores(*args)
    by_name = {r["module"]: r for r in ranking}
    # the class bank is a fixed tensor, so the text tower cannot influence the forget similarity
    assert all(by_name[m]["score"] == 0 for m in modules if m.startswith("text_model"))
    assert all(by_name[m]["score"] > 0 for m in modules if m.startswith("vision_model"))
    assert ranking == relative_fisher_scores(*args)
    top = select_top(ranking, top_k=3)
    assert len(top) == 3 and all(m.startswith("vision_model") for m in top)
    assert not any(p.grad is not None for p in tiny_clip.parameters())


def test_the_fill_adds_modules_by_score_only_where_the_backward_pass_already_goes():
    def row(name, score):
        return {"module": name, "score": score}

    v, t = "vision_model.encoder.layers.{}.mlp.fc{}", "text_model.encoder.layers.{}.mlp.fc1"
    ranking = [row(v.format(6, 1), 9), row(v.format(2, 1), 8), row(t.format(3), 7), row(v.format(4, 2), 6), row(v.format(7, 2), 5),
               row(v.format(5, 1), 4), row(v.format(6, 2), 3), row(v.format(4, 1), 0.0)]
    top2 = [v.format(6, 1), v.format(2, 1)]
    assert select_top(ranking, top_k=2) == select_top(ranking, top_k=2, fill_to=2) == top2
    # blocks 2-7 of the vision tower only: the text tower is not in the backward pass; a zero score never
    assert select_top(ranking, top_k=2, fill_to=16) == [*top2, v.format(4, 2), v.format(7, 2), v.format(5, 1), v.format(6, 2)]
    assert select_top(ranking, top_k=2, fill_to=4) == [*top2, v.format(4, 2), v.format(7, 2)]
    # the best module alone reaches block 6: only blocks 6 and 7 may be added
    assert select_top(ranking, top_k=1, fill_to=16) == [v.format(6, 1), v.format(7, 2), v.format(6, 2)]


def test_target_modules_limit_the_candidates_to_those_kinds(tiny_clip):
    every = candidate_modules(tiny_clip, "vision")
    kept = candidate_modules(tiny_clip, "vision", ["v_proj", "out_proj", "fc1", "fc2"])
    assert {m.rsplit(".", 1)[-1] for m in every} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert kept == [m for m in every if m.rsplit(".", 1)[-1] not in ("q_proj", "k_proj")] and len(kept) == len(every) * 4 // 6


def test_first_block_keeps_the_earlier_blocks_out_of_the_candidates(tiny_clip):
    every = candidate_modules(tiny_clip, "vision")
    late = candidate_modules(tiny_clip, "vision", first_block=1)
    assert late == [m for m in every if ".layers.0." not in m] and len(late) == len(every) * 2 // 3
    assert candidate_modules(tiny_clip, "vision", first_block=2) == [m for m in every if ".layers.2." in m]
    with pytest.raises(ModelError, match="--first_block 3: the model's vision encoder has blocks 0-2; choose at most 2"):
        candidate_modules(tiny_clip, "vision", first_block=3)


def test_the_selection_scores_and_picks_only_the_target_kinds(tiny_clip):
    args = SimpleNamespace(selection_scope="vision", target_modules="fc1,fc2", no_layer_selection=False, seed=0, fisher_samples=6, top_k_modules=3, fill_modules=0, first_block=0)
    modules, ranking = select_modules(args, tiny_clip, SimpleNamespace(train=streams(n=6)), class_bank(tiny_clip), {})
    assert len(modules) == 3 and len(ranking) == len(candidate_modules(tiny_clip, "vision", ["fc1", "fc2"]))
    assert all(m.endswith((".fc1", ".fc2")) for m in modules + [r["module"] for r in ranking])


def test_fisher_scores_follow_the_text_tower_when_it_is_in_the_graph(tiny_clip):
    s = streams(n=4)
    ids = torch.randint(3, 60, (3, 6))

    def bank():
        return F.normalize(tiny_clip.get_text_features(input_ids=ids).pooler_output, dim=-1)

    modules = candidate_modules(tiny_clip, "text")
    ranking = relative_fisher_scores(tiny_clip, bank, s["forget"].pixel_values, s["forget"].labels, s["retain"].pixel_values, s["retain"].labels, modules)
    assert all(r["score"] > 0 for r in ranking)


def test_remind_anchor_contrastive_keeps_other_classes_from_drifting_to_the_retain_class(tiny_clip, tmp_path):
    """Reminding on one class alone pulls every image toward it; the anchor term holds other classes in place."""
    g = torch.Generator().manual_seed(3)
    n = 8
    s = {"retain": ImageSet(torch.randn(n, 3, 16, 16, generator=g), torch.zeros(n, dtype=torch.long)),
         "other": ImageSet(torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 2 + 1)}
    bank = class_bank(tiny_clip)
    tiny_clip.text_model.requires_grad_(False)
    tiny_clip.text_projection.requires_grad_(False)
    teacher = frozen_copy(tiny_clip)

    def anchor_prob_of_retain_class(weight):
        model = copy.deepcopy(tiny_clip)
        no_distill = dict(retain_kd_weight=0.0, other_kd_weight=0.0, embed_distill_weight=0.0, proxy_weight=0.0)
        trainer = RemindTrainer(
            model=model, args=_args(RemindConfig, tmp_path / str(weight), ema_decay=0.0, forget_guard_weight=0.0,
                                    other_contrastive_weight=weight, **no_distill),
            train_dataset=IndexDataset(n), data_collator=UnlearningCollator("retain", s), teacher=teacher, class_embeds=bank,
            prompt_tokens=prompt_tokens(),
        )
        trainer.train()
        logged = {k for row in trainer.state.log_history for k in row}
        assert ("remind/contrastive_other" in logged) == (weight > 0)
        with torch.no_grad():
            emb = F.normalize(model.get_image_features(pixel_values=s["other"].pixel_values).pooler_output, dim=-1)
        return float(F.softmax(trainer.logits(emb, bank), -1)[:, 0].mean())

    assert anchor_prob_of_retain_class(1.0) < anchor_prob_of_retain_class(0.0) - 0.05


def test_stage_configs_default_like_the_cli():
    """A trainer built from Python gets the defaults `hf_unlearn` / the recipe would pass it: the shared knobs are
    declared twice (UnlearnArguments for the CLI, each stage's TrainingArguments subclass), so they must not drift."""
    import dataclasses

    from transformers import TrainingArguments

    from hf_unlearn import trainers
    from hf_unlearn.config import UnlearnArguments

    cli = {f.name: f.default for f in dataclasses.fields(UnlearnArguments)}
    hf = {f.name for f in dataclasses.fields(TrainingArguments)}
    configs = [getattr(trainers, n) for n in trainers.__all__ if n.endswith("Config")]
    assert len(configs) >= 9, configs  # the base, forget, remind and every baseline
    shared = 0
    for cls in configs:
        for f in dataclasses.fields(cls):
            if f.name in cli and f.name not in hf:
                shared += 1
                assert f.default == cli[f.name], f"{cls.__name__}.{f.name} = {f.default!r}, the CLI's default is {cli[f.name]!r}"
    assert shared >= 20


@pytest.mark.parametrize("trainer_cls,config_cls,primary", [(ForgetTrainer, ForgetConfig, "forget"), (RemindTrainer, RemindConfig, "retain")])
def test_precomputed_teacher_gives_the_live_teachers_loss_and_never_runs_per_step(tiny_clip, tmp_path, trainer_cls, config_cls, primary, monkeypatch):
    from hf_unlearn import precision
    from hf_unlearn.prompts import inference_batch_size
    from hf_unlearn.teacher import TeacherCache

    # the cache follows the trainer's precision (fp32 here), not the process's inference default
    monkeypatch.setitem(precision._STATE, "bf16", True)
    s = streams()
    teacher = frozen_copy(tiny_clip)
    tiny_clip.text_model.requires_grad_(False)
    tiny_clip.text_projection.requires_grad_(False)
    collator = UnlearningCollator(primary, s, proxy=True, seed=3)
    cache = TeacherCache(teacher, collator.streams)
    kw = dict(args=_args(config_cls, tmp_path), train_dataset=IndexDataset(8), data_collator=collator, teacher=teacher,
              class_embeds=class_bank(tiny_clip), prompt_tokens=prompt_tokens())
    live = trainer_cls(model=copy.deepcopy(tiny_clip), **kw)
    cached = trainer_cls(model=tiny_clip, teacher_cache=cache, **kw)
    batch = collator([0, 1, 2, 3])
    for k, v in batch.items():  # every stream's rows are named by index, which is what the cache is read by
        assert torch.equal(v["pixel_values"], collator.streams[k].pixel_values[v["index"]]), k
    calls = []
    hook = teacher.vision_model.register_forward_hook(lambda *a: calls.append(1))
    cached_loss = cached.compute_loss(cached.model, batch)
    cached.train()
    hook.remove()
    # the cache embeds each stream once (a batch each for 8 rows, 1,024 / batch for the proxy pool); no step runs the teacher
    proxy_batches = -(-len(collator.streams["proxy"]) // inference_batch_size("cpu"))
    assert len(calls) == 3 + proxy_batches and set(cache._embeds) == {"forget", "retain", "other", "proxy"}
    torch.testing.assert_close(cached_loss, live.compute_loss(live.model, batch), rtol=1e-5, atol=1e-6)


def test_forget_stage_stops_after_two_checks_in_a_row_at_the_threshold(tiny_clip, tmp_path):
    from hf_unlearn.method import StopWhenForgotten

    script = iter([0.5, 0.0, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0])
    seen = []

    def forget_accuracy(model):
        seen.append(model)
        return next(script)

    stop = StopWhenForgotten(forget_accuracy, every=2, threshold=0.01)
    config = _args(ForgetConfig, tmp_path)
    config.num_train_epochs = 20  # 40 steps planned
    trainer = ForgetTrainer(
        model=tiny_clip, args=config, train_dataset=IndexDataset(8),
        data_collator=UnlearningCollator("forget", streams(), proxy=True), teacher=frozen_copy(tiny_clip), class_embeds=class_bank(tiny_clip),
        prompt_tokens=prompt_tokens(), callbacks=[stop],
    )
    trainer.train()
    # checks at steps 2, 4, 6, 8: 0.5, 0.0 (1 in a row), 0.3 (reset), 0.01 (1), then 0.0 at step 10 is the second in a row
    assert trainer.state.global_step == 10 and len(seen) == 5 and seen[0] is tiny_clip
    assert [r["forget/calibration_FA"] for r in trainer.state.log_history if "forget/calibration_FA" in r] == [0.5, 0.0, 0.3, 0.01, 0.0]




def test_vocabulary_kd_on_proxies_is_the_kl_over_the_vocabulary_head_and_needs_it(tiny_clip, tmp_path):
    from hf_unlearn import losses
    from hf_unlearn.prompts import vocabulary

    words = vocabulary(exclude=["dog", "Teddy_Bear"])
    assert "dog" not in words and "teddy bear" not in words and "cat" in words and len(words) > 100
    s = streams()
    vocab = F.normalize(torch.randn(12, tiny_clip.config.projection_dim, generator=torch.Generator().manual_seed(3)), dim=-1)
    kw = dict(model=tiny_clip, train_dataset=IndexDataset(8), data_collator=UnlearningCollator("forget", s, proxy=True),
              teacher=frozen_copy(tiny_clip), class_embeds=class_bank(tiny_clip), prompt_tokens=prompt_tokens())
    with pytest.raises(ValueError, match="vocab_embeds"):
        ForgetTrainer(args=_args(ForgetConfig, tmp_path, proxy_vocab_kd_weight=2.0), **kw)
    trainer = ForgetTrainer(args=_args(ForgetConfig, tmp_path, proxy_vocab_kd_weight=2.0, proxy_weight=0.0, max_steps=2), vocab_embeds=vocab, **kw)
    g = torch.Generator().manual_seed(0)
    st, te = (F.normalize(torch.randn(4, tiny_clip.config.projection_dim, generator=g), dim=-1) for _ in range(2))
    terms = trainer.distill_terms({"proxy": st}, {"proxy": te}, trainer.class_embeds)
    expected = 2.0 * losses.kd_logit_loss(trainer.logits(st, vocab), trainer.logits(te, vocab), trainer.args.kd_temperature)
    assert set(terms) == {"kd_proxy_vocab"} and torch.allclose(terms["kd_proxy_vocab"], expected) and expected > 0
    assert float(trainer.distill_terms({"proxy": st}, {"proxy": st}, trainer.class_embeds)["kd_proxy_vocab"]) < 1e-6  # agreeing: no loss
    trainer.train()
    assert "forget/kd_proxy_vocab" in {k for row in trainer.state.log_history for k in row}


def test_lora_without_peft_input_cast_computes_the_same_under_autocast(tiny_clip):
    """with_lora turns off peft's cast of each adapter's input to float32: under bf16 autocast (the weights stay
    float32) it only sent bf16 activations through float32 and back, so outputs and gradients are bit for bit the same."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from hf_unlearn.method import with_lora

    modules = candidate_modules(tiny_clip, "vision")[:4]
    torch.manual_seed(0)
    pixels = torch.randn(4, 3, 16, 16)
    results = []
    for cast in (True, False):
        torch.manual_seed(2)  # the same adapter initialisation in both
        model = with_lora(copy.deepcopy(tiny_clip), modules, 4, 8, 0.0)
        layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        assert layers and not any(m.cast_input_dtype_enabled for m in layers)
        for m in layers:
            m.cast_input_dtype_enabled = cast
        torch.manual_seed(1)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.data.normal_()  # zero at init: give the adapters something to add
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.get_image_features(pixel_values=pixels).pooler_output
        out.float().pow(2).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (out_a, grads_a), (out_b, grads_b) = results
    assert out_a.dtype == torch.bfloat16 and torch.equal(out_a, out_b)
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
