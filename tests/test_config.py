"""Each setting is declared once, and every setting a trainer reads can be set from the command line and from YAML."""
import dataclasses
import glob
import os
import types

import pytest
import yaml
from transformers import TrainingArguments

from hf_unlearn import config, trainers
from hf_unlearn.cli import SECTIONS, build_parser, parse_args
from hf_unlearn.config import ConfigError, UnlearnArguments
from hf_unlearn.stages import stage_config

from .helpers import ROOT

HF_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}
STAGE_CONFIGS = [getattr(trainers, n) for n in trainers.__all__ if n.endswith("Config")]


def _declaring_classes():
    classes = {c for c in vars(config).values() if isinstance(c, type) and dataclasses.is_dataclass(c)}
    for cls in STAGE_CONFIGS:
        classes |= {c for c in cls.__mro__ if c.__module__.startswith("hf_unlearn") and dataclasses.is_dataclass(c)}
    return classes


def _knobs(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in HF_FIELDS]


def test_every_setting_has_exactly_one_declaration():
    where: dict[str, list[str]] = {}
    for cls in _declaring_classes():
        for name in vars(cls).get("__annotations__", {}):
            if name not in HF_FIELDS:  # TrainingArguments' own, e.g. remove_unused_columns pinned by UnlearnConfig
                where.setdefault(name, []).append(cls.__qualname__)
    twice = {k: v for k, v in where.items() if len(v) > 1}
    assert not twice, twice
    assert len(where) >= 60 and len(STAGE_CONFIGS) >= 10


def _other_value(name: str, default):
    """A valid value other than the default, by type."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    return {"forget_loss": "margin"}[name]


@pytest.mark.parametrize("cls", STAGE_CONFIGS, ids=lambda c: c.__name__)
def test_every_trainer_setting_is_reachable_from_the_cli_and_yaml(cls, tmp_path):
    options = build_parser()._option_string_actions
    defaults = UnlearnArguments()
    for name in _knobs(cls):
        assert f"--{name}" in options, f"{cls.__name__}.{name} has no flag"
        value = _other_value(name, getattr(defaults, name))
        from_cli = parse_args(["--forget", "label=x", f"--{name}", str(value)])
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(f"forget: label=x\n{name}: {str(value).lower() if isinstance(value, bool) else value}\n")
        from_yaml = parse_args(["--config", str(recipe)])
        for args in (from_cli, from_yaml):
            run = types.SimpleNamespace(args=args, stage_folder=lambda n: str(tmp_path / n))
            built = stage_config(cls, run, "stage", 1e-3)
            assert getattr(built, name) == value, (cls.__name__, name)


def test_yaml_nests_by_section_and_old_names_still_work(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("forget: label=x\nforget_stage:\n  forget_learning_rate: 1e-2\n  forget_epochs: 2\n"
                      "distill:\n  anchor_kd_weight: 0.25\nanchor_contrastive_weight: 0.5\n")
    args = parse_args(["--config", str(recipe), "--forget_epochs", "3"])
    assert (args.forget_learning_rate, args.forget_epochs, args.other_kd_weight, args.other_contrastive_weight) == (1e-2, 3.0, 0.25, 0.5)
    assert parse_args(["--forget", "label=x", "--anchor_kd_weight", "0.1"]).other_kd_weight == 0.1
    assert UnlearnArguments.from_dict({"anchor_contrastive_weight": 0.0}).other_contrastive_weight == 0.0
    assert set(SECTIONS.values()) == set(config.GROUPS)


@pytest.mark.parametrize("recipe", sorted(glob.glob(os.path.join(ROOT, "recipes", "configs", "*.yaml"))), ids=os.path.basename)
def test_every_shipped_recipe_parses_and_sets_what_it_names(recipe):
    with open(recipe) as f:
        values = yaml.safe_load(f)
    flat = {k: v for key, value in values.items() for k, v in (value.items() if isinstance(value, dict) else [(key, value)])}
    args = parse_args(["--config", recipe])
    for key, value in flat.items():  # YAML reads 3e-4 as a string; the recipe parses it as the flag would
        assert getattr(args, key) == type(getattr(args, key))(value), key


def test_yaml_values_are_checked_like_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("forget_epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"forget_epochs: expected a single value, got \[1, 2\]"):
        parse_args(["--config", str(recipe)])
    recipe.write_text("forget_stage:\n  remind_epochs: 1\n")
    with pytest.raises(ConfigError, match="unknown keys \\['remind_epochs'\\] in section 'forget_stage'"):
        parse_args(["--config", str(recipe)])
    recipe.write_text("forget_epochs: many\n")
    with pytest.raises(SystemExit):  # argparse: "argument --forget_epochs: invalid float value: 'many'"
        parse_args(["--config", str(recipe)])


@pytest.mark.parametrize("kwargs, message", [
    ({"forget_learning_rate": 0.0}, r"--forget_learning_rate 0\.0: must be > 0"),
    ({"remind_epochs": -1.0}, r"--remind_epochs -1\.0: must be > 0"),
    ({"remind_max_steps": -1}, r"--remind_max_steps -1: must be >= 0"),
    ({"forget_epochs": [1, 2]}, r"--forget_epochs \[1, 2\]: must be float"),
    ({"batch_size": 2.5}, r"--batch_size 2\.5: must be int"),
    ({"ema_decay": 1.0}, r"--ema_decay 1\.0: must be in \[0, 1\)"),
    ({"forget_loss": "nope"}, r"unknown forget_loss 'nope' \(--forget_loss\); choices: similarity, margin, teacher_others"),
    ({"alpha_grid": "1,x"}, r"--alpha_grid '1,x': must be comma-separated numbers in \[0, 1\]"),
    ({"retain": ""}, r"--retain '': must be a spec"),
    ({"forget_relative_learning_rate": 0.0}, r"--forget_relative_learning_rate 0\.0: must be > 0, or left out"),
    ({"forget_relative_learning_rate": 0.01, "hp_search": True},
     r"--forget_relative_learning_rate 0\.01: must be left out with --hp_search \(its grid is of absolute rates\)"),
])
def test_out_of_range_settings_are_refused_naming_the_flag(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        UnlearnArguments(**kwargs)


def test_trainer_configs_check_the_groups_they_mix_in(tmp_path):
    with pytest.raises(ConfigError, match="--forget_weight"):
        trainers.ForgetConfig(output_dir=str(tmp_path), forget_weight=0.0)
    with pytest.raises(ConfigError, match="--kd_temperature"):
        trainers.SCRUBConfig(output_dir=str(tmp_path), kd_temperature=0.0)


def test_no_distill_zeroes_every_distillation_weight(tmp_path):
    args = UnlearnArguments(forget="label=x", no_distill=True)
    run = types.SimpleNamespace(args=args, stage_folder=lambda n: str(tmp_path / n))
    for cls in (trainers.ForgetConfig, trainers.RemindConfig):
        built = stage_config(cls, run, "stage", 1e-3)
        assert all(getattr(built, w) == 0.0 for w in config.DISTILL_WEIGHTS), cls.__name__
    assert "text_distill_weight" in config.DISTILL_WEIGHTS


@pytest.mark.parametrize("n_forget, n_retain, caps, expected", [
    (530, 660, {}, (102, 21)),  # PACS dog/sketch: neither ceiling binds
    (4250, 4250, {}, (200, 64)),  # a whole CIFAR-10 class: both do
    (4250, 4250, {"forget_max_steps": 0, "remind_max_steps": 0}, (798, 133)),  # 0: epochs alone
    (4250, 4250, {"no_remind": True}, (200, 0)),
    (125, 300, {}, (100, 10)),  # PACS guitar/art_painting: 6 epochs are 24 steps, the floor makes them 100
    (125, 300, {"forget_min_steps": 0}, (24, 10)),  # 0: epochs alone
])
def test_stage_steps_follow_the_epochs_between_the_forget_floor_and_each_stages_ceiling(n_forget, n_retain, caps, expected):
    from hf_unlearn.method import budget_steps, stage_steps

    groups = types.SimpleNamespace(train={"forget": range(n_forget), "retain": range(n_retain)})
    args = UnlearnArguments(**caps)
    assert stage_steps(args, groups) == expected
    assert budget_steps(args, groups) == sum(expected)  # every baseline gets the same budget


def test_unlearn_keyword_arguments_override_args_without_changing_them(monkeypatch):
    import hf_unlearn
    from hf_unlearn import pipeline

    seen = []
    monkeypatch.setattr(pipeline, "unlearn", lambda a: seen.append(a) or {})
    args = UnlearnArguments(forget="label=x", seed=1)
    hf_unlearn.unlearn(args, seed=2, anchor_kd_weight=0.5)
    assert (seen[0].seed, seen[0].other_kd_weight, seen[0].forget) == (2, 0.5, "label=x")
    assert args.seed == 1 and args.other_kd_weight == 1.0


def test_cpu_threads_default_to_this_processs_share_of_the_cores_and_the_flag_wins(monkeypatch):
    import os

    import torch

    from hf_unlearn.run import set_cpu_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    try:
        torch.set_num_threads(1)  # what accelerate launch's OMP_NUM_THREADS=1 leaves
        assert set_cpu_threads(None) == 8 and torch.get_num_threads() == 8
        assert set_cpu_threads(None, local_processes=2) == 4 and torch.get_num_threads() == 4
        assert set_cpu_threads(3) == 3 and torch.get_num_threads() == 3
        assert set_cpu_threads(None, local_processes=16) == 1
    finally:
        torch.set_num_threads(before)


def test_a_forget_floor_above_the_ceiling_is_refused():
    with pytest.raises(ConfigError, match=r"--forget_min_steps 300: must be <= --forget_max_steps \(200\)"):
        UnlearnArguments(forget="label=x", forget_min_steps=300)
    assert UnlearnArguments(forget="label=x", forget_min_steps=300, forget_max_steps=0).forget_min_steps == 300


def test_settings_the_chosen_method_never_reads_are_named():
    assert UnlearnArguments().ignored_settings() == []
    args = UnlearnArguments(method="ga", forget_learning_rate=3e-4, no_lora=True, baseline_learning_rate=1e-5, forget_weight=0.5)
    assert args.ignored_settings() == ["forget_learning_rate", "no_lora"]  # forget_weight is a baseline's weight too
    assert UnlearnArguments(baseline_weight=0.5, scrub_alpha=0.5, forget_learning_rate=3e-4).ignored_settings() == ["baseline_weight", "scrub_alpha"]
    assert UnlearnArguments(method="ga", forget_learning_rate=1e-3).ignored_settings() == []  # at its default: nothing to say


def test_the_ignored_lists_are_what_the_trainers_read():
    from hf_unlearn.methods import METHODS
    from hf_unlearn.trainers import ForgetConfig, RemindConfig

    def names(cls):
        return {f.name for f in dataclasses.fields(cls)}

    for method in METHODS.values():
        assert not set(config.METHOD_ONLY) & names(method.config), method.name
    assert not set(config.BASELINE_ONLY) & (names(ForgetConfig) | names(RemindConfig))
    assert set(config.METHOD_ONLY) <= names(UnlearnArguments) and set(config.BASELINE_ONLY) <= names(UnlearnArguments)
