"""The robustness audit: each attack on tiny models, the verdicts, the report and the card."""
import json
import os
import shutil
import types

import numpy as np
import pytest
import torch
import yaml

from hf_unlearn.audit import attacks
from hf_unlearn.audit.outcome import NO_REFERENCE, audit_outcome, card_section, survivors_line, verdict_lines, verdicts
from hf_unlearn.audit.phrasings import load_bank
from hf_unlearn.cli import main
from hf_unlearn.config import UnlearnArguments
from hf_unlearn.data import ImageSet
from hf_unlearn.demo import ensure_demo_reference
from hf_unlearn.prompts import EVAL_TEMPLATES, TRAIN_TEMPLATES

from .helpers import base_args

AUDIT_FAST = ["--audit_relearn_steps", "3", "--audit_relearn_batch_size", "8", "--audit_relearn_forget_images", "2"]


def test_the_phrasing_bank_is_large_and_disjoint_from_every_training_and_reported_template():
    from hf_unlearn.demo.pretrain import CAPTION_TEMPLATES

    bank = load_bank()
    assert len(bank) >= 40 and len(set(bank)) == len(bank)
    assert not set(bank) & (set(TRAIN_TEMPLATES) | set(EVAL_TEMPLATES))
    assert not set(bank) & {t.replace("{c}", "{}") for t in CAPTION_TEMPLATES}  # nor a caption the demo CLIP was pretrained on


def test_the_composed_training_phrasings_hold_out_the_audits_and_the_reported_templates():
    from hf_unlearn.prompts import compose_phrasings, phrasing_key

    held_out = [*load_bank(), *EVAL_TEMPLATES]
    composed = compose_phrasings(held_out)
    assert len(composed) == 512 == len(set(composed)) and all(t.count("{}") == 1 for t in composed)
    assert not {phrasing_key(t) for t in composed} & {phrasing_key(t) for t in held_out}  # not even up to articles
    everything = compose_phrasings(size=2000)
    assert {phrasing_key(t) for t in everything} & {phrasing_key(t) for t in held_out}  # so the hold-out removes something
    assert compose_phrasings(held_out, seed=0) == composed != compose_phrasings(held_out, seed=1)
    assert phrasing_key("A drawing of the {}.") == phrasing_key("a drawing of a {}") == ("drawing", "of", "{}")
    with pytest.raises(ValueError, match="composed phrasings remain"):
        compose_phrasings(held_out, size=10**6)


def test_training_phrasings_need_the_frozen_text_tower_of_the_vision_scope():
    from hf_unlearn.checks import ConfigError

    assert UnlearnArguments(forget_phrasings=4).forget_phrasings == 4
    with pytest.raises(ConfigError, match="--forget_phrasings 4: must be 0 with --selection_scope both"):
        UnlearnArguments(forget_phrasings=4, selection_scope="both")
    with pytest.raises(ConfigError, match="forget_phrasings"):
        UnlearnArguments(forget_phrasings=-1)


def test_phrasing_attack_finds_the_worst_phrasing(tiny_clip):
    from hf_unlearn.evaluation import EvalSet

    class Tok:  # any tokenizer-like object: the tiny model's vocabulary is 64 ids
        def __call__(self, texts, **kw):
            ids = [[1] + [3 + (hash(w) % 50) for w in t.split()] + [2] for t in texts]
            n = max(map(len, ids))
            return {"input_ids": torch.tensor([i + [0] * (n - len(i)) for i in ids]),
                    "attention_mask": torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids])}

    g = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randn(30, 3, 16, 16, generator=g), torch.arange(30) % 3)
    masks = {"forget": torch.arange(30) < 10, "retain": (torch.arange(30) >= 10) & (torch.arange(30) < 20), "other": torch.arange(30) >= 20}
    out = attacks.phrasing_attack(tiny_clip, Tok(), EvalSet("t", images, ["cat", "dog", "fish"], masks), ["a {}.", "the {}!", "{} here."])
    fas = [m["FA"] for m in out["per_phrasing"].values()]
    assert out["worst_FA"] == max(fas) and out["mean_FA"] == pytest.approx(sum(fas) / 3)
    assert set(out["per_phrasing"][out["worst_phrasing"]]) == {"FA", "RA", "OA"}


def test_relearning_moves_the_weights_of_a_copy_and_never_the_audited_model(world):
    from transformers import AutoProcessor, CLIPModel

    model, tokenizer = CLIPModel.from_pretrained(world[0]), AutoProcessor.from_pretrained(world[0]).tokenizer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = ImageSet(torch.randn(12, 3, 32, 32), torch.arange(12) % 5)
    attacked = attacks.relearn(model, tokenizer, images, ["a sketch of a circle."] * 12, steps=3, batch_size=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    moved = [k for k, v in attacked.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2  # every parameter trains


def test_the_probe_decodes_what_the_embedding_holds():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    centres = torch.randn(3, 8, generator=g) * 3
    x = centres[y] + torch.randn(300, 8, generator=g)
    assert attacks.probe_accuracy(x[:200], y[:200], x[200:], y[200:], 3) > 0.9
    noise = torch.randn(300, 8, generator=g)
    assert attacks.probe_accuracy(noise[:200], y[:200], noise[200:], y[200:], 3) < 0.6


def test_subgroup_neighbours_tells_an_image_among_its_subgroup_from_one_among_the_siblings():
    g = torch.Generator().manual_seed(0)
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    subgroup, sibling, other = torch.eye(8)[0], torch.eye(8)[1], torch.eye(8)[2]
    train = unit(torch.stack([subgroup] * 12 + [sibling] * 12 + [other] * 12) + 0.1 * torch.randn(36, 8, generator=g))
    train_labels = torch.tensor([0] * 24 + [1] * 12)
    in_subgroup = torch.arange(36) < 12
    queries = unit(torch.stack([subgroup, sibling, 0.6 * subgroup + 0.4 * sibling, other]) + 0.05 * torch.randn(4, 8, generator=g))
    share = attacks.subgroup_neighbours(queries, torch.tensor([0, 0, 0, 2]), train, train_labels, in_subgroup, k=10)
    assert share[0] == 1 and share[1] == 0 and share[2] == 1  # nearer the subgroup: its ten nearest are all the subgroup's
    wider = attacks.subgroup_neighbours(queries[2:3], torch.tensor([0]), train, train_labels, in_subgroup, k=16)
    assert wider[0] == 0.75  # all 12 subgroup images first, then 4 siblings
    assert torch.isnan(share[3])  # no training image of that class
    # only the query's own class counts: the 'other' images, nearest to nothing here, never enter class 0's neighbours
    far = attacks.subgroup_neighbours(unit(other)[None], torch.tensor([0]), train, train_labels, in_subgroup, k=24)
    assert far[0] == 0.5


def test_relative_change_is_zero_for_the_original_and_grows_with_the_update(tiny_clip):
    import copy

    other = copy.deepcopy(tiny_clip)
    assert max(attacks.relative_change(other, tiny_clip).values()) == 0.0
    name = next(n for n, m in other.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder.layers." in n)
    with torch.no_grad():
        dict(other.named_modules())[name].weight.mul_(1.1)
    assert attacks.relative_change(other, tiny_clip)[name] == pytest.approx(0.1, rel=1e-4)


def test_verdicts_compare_with_the_reference_or_the_thresholds():
    args = UnlearnArguments()
    result = lambda fa, probe: {"phrasing": {"worst_FA": fa}, "relearn_retain_only": fa, "relearn_retain_plus_forget": fa, "probe": probe}  # noqa: E731
    alone = verdicts({"unlearned": result(0.02, 0.1), "original": result(0.9, 0.8)}, args)
    assert alone["phrasing"]["verdict"] == "forgotten" and alone["probe"]["verdict"] == "forgotten"
    deep = verdicts({"unlearned": result(0.10, 0.1), "original": result(0.9, 0.8), "reference": result(0.09, 0.1)}, args)
    shallow = verdicts({"unlearned": result(0.10, 0.1), "original": result(0.9, 0.8), "reference": result(0.0, 0.1)}, args)
    assert deep["relearn_retain_only"]["verdict"] == "forgotten" and shallow["relearn_retain_only"]["verdict"] == "shallow"
    assert shallow["relearn_retain_only"]["against"] == "reference + margin"


def test_the_outcome_line_names_every_attack_that_brings_the_subgroup_back():
    args = UnlearnArguments()
    result = lambda fa, probe: {"phrasing": {"worst_FA": fa}, "relearn_retain_only": fa, "relearn_retain_plus_forget": fa, "probe": probe}  # noqa: E731
    deep = {"verdicts": verdicts({"unlearned": result(0.0, 0.1), "original": result(0.9, 0.8)}, args)}
    assert audit_outcome(deep) == "Robustness audit: forgotten under all 4 attacks."
    shallow = {"verdicts": verdicts({"unlearned": result(0.0, 0.7), "original": result(0.9, 0.8)}, args)}
    shallow["verdicts"]["relearn_retain_plus_forget"].update(verdict="shallow")
    line = audit_outcome(shallow)
    assert line.startswith("Robustness audit: SHALLOW under 2 of 4 attacks (relearning on retain + forget images; linear probe)")
    assert "phrasing" not in line and "retain images (FA)" not in line
    lines = verdict_lines(shallow)
    assert len(lines) == 5 and lines[-1] == line and "shallow" in lines[3] and "forgotten" in lines[0]


def test_a_model_that_never_saw_the_subgroup_relearns_it_more_slowly(trained_world):
    """The demo CLIP pretrained without cartoons of stars, against the one that saw them, under the same attack
    (on this small world: FA 30 % -> 50 % / 30 % after the attacks when it saw them, 0 % throughout when it did not)."""
    from transformers import AutoProcessor, CLIPModel

    from hf_unlearn.audit.attack_data import prepare_audit_data
    from hf_unlearn.audit.runner import _relearn_fa
    from hf_unlearn.groups import load_checked, prepare_eval_sets, prepare_groups

    model_dir, data_dir = trained_world
    forget = "label=star,domain=cartoon"
    reference_dir = ensure_demo_reference(os.path.dirname(model_dir), forget)
    assert ensure_demo_reference(os.path.dirname(model_dir), "domain=cartoon,label=star") == reference_dir  # the same subgroup: reused
    args = UnlearnArguments(model_name_or_path=model_dir, dataset=data_dir, forget=forget, audit_relearn_steps=30, audit_relearn_batch_size=16)
    processor = AutoProcessor.from_pretrained(model_dir)
    groups, plan = prepare_groups(args, processor)
    data = prepare_audit_data(args, processor, groups, prepare_eval_sets(args, processor, plan)[0], load_checked(args)["train"])
    saw, never = CLIPModel.from_pretrained(model_dir), CLIPModel.from_pretrained(reference_dir)
    for with_forget in (False, True):
        fa = {name: _relearn_fa(m, processor.tokenizer, data, args, EVAL_TEMPLATES, with_forget) for name, m in (("saw", saw), ("never", never))}
        assert fa["never"] < fa["saw"], (with_forget, fa)


def test_a_run_in_the_demo_world_compares_with_a_reference_for_its_own_subgroup(monkeypatch, tmp_path):
    import contextlib

    import hf_unlearn.demo as demo
    from hf_unlearn.run import _with_demo_defaults

    built = []
    (tmp_path / "model").mkdir(), (tmp_path / "data").mkdir()
    monkeypatch.setattr(demo, "ensure_demo", lambda: (str(tmp_path / "model"), str(tmp_path / "data")))

    def reference(cache, forget):
        built.append(forget)
        os.makedirs(f"{cache}/ref-{forget}", exist_ok=True)
        return f"{cache}/ref-{forget}"

    monkeypatch.setattr(demo, "ensure_demo_reference", reference)
    state = type("State", (), {"main_process_first": staticmethod(contextlib.nullcontext)})()
    args = _with_demo_defaults(UnlearnArguments(forget="label=star,domain=cartoon"), state)
    assert built == ["label=star,domain=cartoon"] and args.reference_model == f"{tmp_path}/ref-label=star,domain=cartoon"
    assert _with_demo_defaults(UnlearnArguments(), state).reference_model.endswith(demo.DEMO_FORGET)  # the default subgroup's
    for given in ({"no_audit": True}, {"reference_model": "org/mine"}):  # no audit, or the user's own reference: none is built
        assert _with_demo_defaults(UnlearnArguments(**given), state).reference_model == given.get("reference_model")
    assert len(built) == 2


def test_the_relearning_attacks_fa_reads_the_forget_rows_alone_and_equals_the_whole_sets(world, monkeypatch):
    import hf_unlearn.audit.runner as audit
    from hf_unlearn.evaluation import EvalSet, evaluate_sets, predict
    from transformers import AutoProcessor, CLIPModel

    model_dir, _ = world
    model, tokenizer = CLIPModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir).tokenizer
    g = torch.Generator().manual_seed(0)
    size = model.config.vision_config.image_size
    forget = torch.rand(20, generator=g) < 0.3
    images = ImageSet(torch.randn(20, 3, size, size, generator=g), torch.zeros(20, dtype=torch.long))
    classes = ["circle", "star", "square"]
    pred = predict(model, tokenizer, EvalSet("t", images, classes), EVAL_TEMPLATES)
    images.labels = torch.where(torch.arange(20) % 2 == 0, pred, (pred + 1) % 3)  # half the rows recognised: FA strictly inside (0, 1)
    forget = torch.arange(20) % 3 == 0
    test = EvalSet("t", images, classes, {"forget": forget, "retain": ~forget})
    rows = audit.forget_rows(test)
    assert len(rows.images) == int(forget.sum()) and torch.equal(rows.images.labels, test.images.labels[forget])
    seen = []
    monkeypatch.setattr(audit, "relearn", lambda m, *a, **k: m)  # the attack itself is tested above; here: what is scored
    monkeypatch.setattr(audit, "evaluate_sets", lambda m, t, sets, *a: seen.append(sets) or evaluate_sets(m, t, sets, *a))
    data = types.SimpleNamespace(test=test, kept=ImageSet(torch.zeros(0), torch.zeros(0)), kept_captions=[])
    args = types.SimpleNamespace(audit_relearn_steps=1, audit_relearn_learning_rate=1e-4, audit_relearn_batch_size=4, seed=0)
    fa = audit._relearn_fa(model, tokenizer, data, args, EVAL_TEMPLATES, with_forget=False)
    assert len(seen[0][0].images) == int(forget.sum())
    assert 0 < fa < 1 and fa == pytest.approx(evaluate_sets(model, tokenizer, [test], EVAL_TEMPLATES)["FA"], abs=1e-6)


def test_every_run_ends_with_the_audit_in_its_report_and_card(world, tmp_path, capsys):
    out = tmp_path / "run"
    args = [a for a in base_args(world, out, *AUDIT_FAST) if a != "--no_audit"]
    report = main(args)
    printed = capsys.readouterr().out
    audit = json.loads((out / "unlearning_report.json").read_text())["audit"]
    assert audit == json.loads(json.dumps(report["audit"]))
    assert set(audit["verdicts"]) == {"phrasing", "relearn_retain_only", "relearn_retain_plus_forget", "probe"}
    assert audit["settings"]["phrasings"] >= 40 and len(audit["unlearned"]["phrasing"]["per_phrasing"]) >= 40
    assert set(audit["distance"]) == set(report["selected_modules"]) and all(v > 0 for v in audit["distance"].values())
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["tags"] and "## Robustness audit" in card and "linear probe" in card
    assert audit_outcome(audit, "the Robustness audit section below") in card  # under the outcome, not only in its section
    assert NO_REFERENCE in card and NO_REFERENCE not in card_section({**audit, "reference": audit["original"]})  # how to read a threshold
    assert all(line in printed for line in verdict_lines(audit))  # and on the console, after the table
    assert np.isfinite(report["timings_s"]["audit_s"])
    # FA's survivors: exactly the forget test images still recognised, each with its share of subgroup neighbours
    found = audit["survivors"]
    assert len(found["recognised"]) == round(audit["unlearned"]["FA"] * found["forget_test_images"])
    assert all(0 <= r["subgroup_share"] <= 1 for r in found["recognised"]) and found["like_siblings"] <= len(found["recognised"])
    assert found["subgroup_share_mean"] > 0.5  # the world's circle sketches sit among circle sketches, not circle photos
    assert survivors_line(found) in card and survivors_line(found) in printed
    assert f"a share of the {found['forget_test_images']} forget test images: one image is {1 / found['forget_test_images']:.2%}." in card


def test_the_audit_reuses_the_runs_test_set_embeddings(world, tmp_path, monkeypatch):
    from hf_unlearn.audit import runner as audit_pkg
    from hf_unlearn import pipeline
    from hf_unlearn import run as run_module

    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))  # cold: the run embeds the original's test set itself
    monkeypatch.setattr(run_module, "_HELD_OUT_MEMO", {})
    evaluated, audited = [], []
    for module, seen in ((pipeline, evaluated), (audit_pkg, audited)):
        real = module.embed_images
        monkeypatch.setattr(module, "embed_images", lambda model, x, *a, real=real, seen=seen, **k: seen.append(x) or real(model, x, *a, **k))
    report = main([a for a in base_args(world, tmp_path / "run", *AUDIT_FAST) if a != "--no_audit"])
    test_pixels = evaluated[0]  # the final evaluation's: the run's test set
    assert len(evaluated) == 1 and audited and not any(x is test_pixels for x in audited)  # the audit embedded only the probe's rows
    assert report["audit"]["unlearned"]["FA"] == pytest.approx(report["metrics"]["unlearned"]["FA"])
    assert report["audit"]["original"]["FA"] == pytest.approx(report["metrics"]["original"]["FA"])


def test_the_audit_runs_on_its_own_and_updates_the_model_folder(world, tmp_path, capsys):
    from hf_unlearn.audit.__main__ import main as audit_main

    out = tmp_path / "run"
    main(base_args(world, out))  # --no_audit: the run's own card has no audit
    assert "Robustness audit" not in (out / "README.md").read_text()
    audit = audit_main(["--model", str(out), "--original", world[0], "--dataset", world[1], "--forget", "label=circle,domain=sketch",
                        "--reference_model", world[0], "--json", str(tmp_path / "audit.json"), *AUDIT_FAST])
    assert audit["verdicts"]["phrasing"]["against"] == "reference + margin" and "reference" in audit
    assert json.loads((out / "unlearning_report.json").read_text())["audit"]["verdicts"] == json.loads(json.dumps(audit["verdicts"]))
    assert "## Robustness audit" in (out / "README.md").read_text() and (tmp_path / "audit.json").exists()
    # an audit of another subgroup is printed but never written into this run's report and card
    before = (out / "unlearning_report.json").read_text()
    audit_main(["--model", str(out), "--original", world[0], "--dataset", world[1], "--forget", "label=square,domain=photo", *AUDIT_FAST])
    assert (out / "unlearning_report.json").read_text() == before
    assert "The audit was not written into" in capsys.readouterr().out


def test_the_originals_and_references_attacks_are_cached_and_the_unlearned_models_never(world, tmp_path, monkeypatch):
    from hf_unlearn.audit import runner as audit_pkg
    from hf_unlearn.audit.__main__ import main as audit_main

    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))  # cold, whatever other tests cached
    out = tmp_path / "run"
    main(base_args(world, out))
    attacked = []
    real = audit_pkg.attack_model
    monkeypatch.setattr(audit_pkg, "attack_model", lambda model, *a, **k: attacked.append(model) or real(model, *a, **k))
    argv = ["--model", str(out), "--original", world[0], "--dataset", world[1], "--forget", "label=circle,domain=sketch",
            "--reference_model", world[0], *AUDIT_FAST]
    first = audit_main(argv)
    # cold: the unlearned model and the original; the reference has the original's weights here, so its entry is the original's
    assert len(attacked) == 2
    second = audit_main(argv)
    assert len(attacked) == 3  # warm: only the unlearned model is attacked again
    assert second["original"] == json.loads(json.dumps(first["original"])) and second["verdicts"] == json.loads(json.dumps(first["verdicts"]))
    audit_main([*argv, "--audit_relearn_steps", "2"])  # another attack setting is another entry
    assert len(attacked) == 5


def test_the_originals_probe_embeddings_are_reused_by_the_audit_of_another_subgroup(world, tmp_path, monkeypatch):
    from hf_unlearn.audit import runner as audit_pkg
    from hf_unlearn.audit.__main__ import main as audit_main

    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(cache))  # cold, whatever other tests cached
    out = tmp_path / "run"
    main(base_args(world, out))
    embedded, attacked = [], []
    real_embed, real_attack = audit_pkg._embed_train, audit_pkg.attack_model
    monkeypatch.setattr(audit_pkg, "_embed_train", lambda model, *a, **k: embedded.append(model) or real_embed(model, *a, **k))
    monkeypatch.setattr(audit_pkg, "attack_model", lambda model, *a, **k: attacked.append(model) or real_attack(model, *a, **k))

    def audit(forget):
        return audit_main(["--model", str(out), "--original", world[0], "--dataset", world[1], "--forget", forget, *AUDIT_FAST])

    audit("label=circle,domain=sketch")
    assert len(attacked) == 2 and len(embedded) == 2  # cold: both models embed the training split
    other = audit("label=square,domain=photo")
    # another subgroup: the original is attacked again, but its embeddings of the same training split come from the cache
    assert len(attacked) == 4 and len(embedded) == 3 and embedded[-1] is attacked[-2]
    shutil.rmtree(cache)
    cold = audit("label=square,domain=photo")
    assert len(embedded) == 5
    assert other["original"]["probe"] == cold["original"]["probe"] and other["unlearned"] == json.loads(json.dumps(cold["unlearned"]))
