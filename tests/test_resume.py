"""An interrupted stage resumes from its last checkpoint and ends with the uninterrupted run's weights."""
import json
import os
import time

import pytest
import torch
from safetensors.torch import load_file

from hf_unlearn.cli import main
from hf_unlearn.trainers import ForgetTrainer, RemindTrainer
from tests.helpers import base_args

SETTINGS = ["--forget_epochs", "4", "--remind_epochs", "3", "--batch_size", "4", "--save_steps", "2", "--seed", "3"]


class SimulatedCrash(RuntimeError):
    pass


def _crash_at(monkeypatch, cls, step):
    original = cls.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step:
            raise SimulatedCrash(f"{cls.stage_name} stage killed at step {step}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "training_step", training_step)


def _run_killed(monkeypatch, args, cls, step):
    """Run the recipe with ``args`` and kill it in ``cls``'s stage at ``step``."""
    with monkeypatch.context() as m:
        _crash_at(m, cls, step)
        with pytest.raises(SimulatedCrash):
            main(args)


def test_interrupted_stages_resume_to_the_same_final_weights(world, tmp_path, monkeypatch):
    ref = tmp_path / "uninterrupted"
    main(base_args(world, ref, *SETTINGS))

    out = tmp_path / "interrupted"
    stages = str(out) + ".incomplete/stages"
    # killed in the middle of the forget stage (LoRA adapters)
    _run_killed(monkeypatch, base_args(world, out, *SETTINGS), ForgetTrainer, 3)
    assert os.path.isdir(os.path.join(stages, "forget-run", "checkpoint-2"))
    assert not os.path.exists(os.path.join(stages, "forget"))
    # resumed; then killed in the middle of the remind stage (EMA weights)
    _run_killed(monkeypatch, base_args(world, out, *SETTINGS, "--resume_from_checkpoint"), RemindTrainer, 3)
    assert os.path.exists(os.path.join(stages, "forget", "stage_complete.json"))
    assert os.path.exists(os.path.join(stages, "remind-run", "checkpoint-2", "ema_state.safetensors"))
    elapsed = os.path.join(stages, "remind-run", "checkpoint-2", "stage_state.json")
    saved = json.loads(open(elapsed).read())
    assert saved["seconds"] > 0 and saved["settings"]["trainer"] == "RemindTrainer"
    before_crash = 1000.0  # as if the stage had trained that long before it was killed
    with open(elapsed, "w") as f:
        json.dump({**saved, "seconds": before_crash}, f)
    resumed_at = time.time()
    main(base_args(world, out, *SETTINGS, "--resume_from_checkpoint"))
    report = json.loads((out / "unlearning_report.json").read_text())
    # the forget stage was reused by this last run: its time is that of the run that finished it
    assert report["timings_s"]["forget_s"] == report["stages"]["forget"]["seconds"] > 0
    # the resumed remind stage counts its seconds before the crash too
    assert before_crash < report["stages"]["remind"]["seconds"] < before_crash + (time.time() - resumed_at)

    a, b = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff < 1e-6, f"resumed weights differ from the uninterrupted run by {diff}"
    original = load_file(os.path.join(world[0], "model.safetensors"))
    assert any(not torch.equal(original[k], a[k]) for k in a)  # and the run did change the model


def test_without_the_flag_an_interrupted_stage_starts_over(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _run_killed(monkeypatch, base_args(world, out, *SETTINGS), ForgetTrainer, 3)
    ref = tmp_path / "ref"
    main(base_args(world, out, *SETTINGS))
    main(base_args(world, ref, *SETTINGS))
    a, b = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6


def test_a_finished_stage_trained_with_other_settings_is_not_reused(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    # the forget stage finishes, the run dies in the remind stage
    _run_killed(monkeypatch, base_args(world, out, *SETTINGS), RemindTrainer, 1)
    done = json.loads(open(str(out) + ".incomplete/stages/forget/stage_complete.json").read())
    assert done["settings"]["trainer"] == "ForgetTrainer" and done["settings"]["forget_weight"] == 1.0
    with pytest.raises(ValueError, match=r"stages/forget is a finished stage trained with other settings \(forget_weight: 1\.0 -> 2\.0\)"):
        main(base_args(world, out, *SETTINGS, "--forget_weight", "2", "--resume_from_checkpoint"))
    main(base_args(world, out, *SETTINGS, "--resume_from_checkpoint"))  # the same settings still reuse it
    assert json.loads((out / "unlearning_report.json").read_text())["stages"]["forget"]["settings"] == done["settings"]


def test_a_finished_stage_from_other_inputs_or_another_student_is_not_reused(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _run_killed(monkeypatch, base_args(world, out, *SETTINGS), RemindTrainer, 1)
    done = json.loads(open(str(out) + ".incomplete/stages/forget/stage_complete.json").read())
    assert done["settings"]["inputs"]["forget"] == "label=circle,domain=sketch"
    assert done["settings"]["student"]["lora"]["r"] == 8 and done["settings"]["student"]["modules"]
    # another subgroup with the same trainer settings: the forget stage learned the wrong thing
    other = base_args(world, out, *SETTINGS, "--resume_from_checkpoint")
    other[other.index("label=circle,domain=sketch")] = "label=circle,domain=cartoon"
    with pytest.raises(ValueError, match=r"inputs\.forget: 'label=circle,domain=sketch' -> 'label=circle,domain=cartoon'"):
        main(other)
    with pytest.raises(ValueError, match=r"student\.lora\.r: 8 -> 4"):
        main(base_args(world, out, *SETTINGS, "--lora_r", "4", "--resume_from_checkpoint"))
    main(base_args(world, out, *SETTINGS, "--resume_from_checkpoint"))
    report = json.loads((out / "unlearning_report.json").read_text())
    assert report["stages"]["remind"]["settings"]["student"]["starts_from"] == "forget"


def test_an_interrupted_stage_is_not_resumed_with_other_settings(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _run_killed(monkeypatch, base_args(world, out, *SETTINGS), ForgetTrainer, 3)
    with pytest.raises(ValueError, match=r"checkpoint-2 is an interrupted stage's checkpoint trained with other settings "
                                         r"\(forget_weight: 1\.0 -> 2\.0\); .*without --resume_from_checkpoint"):
        main(base_args(world, out, *SETTINGS, "--forget_weight", "2", "--resume_from_checkpoint"))
    main(base_args(world, out, *SETTINGS, "--forget_weight", "2"))  # without the flag the stage starts over
    assert json.loads((out / "unlearning_report.json").read_text())["stages"]["forget"]["settings"]["forget_weight"] == 2.0


def test_resume_with_nothing_to_resume_says_so_and_starts_over(world, tmp_path, caplog):
    """A mistyped --output_dir must not pass silently for a resumed run: the log says it starts from scratch."""
    import logging

    with caplog.at_level(logging.WARNING, logger="hf_unlearn"):
        main(base_args(world, tmp_path / "never-interrupted", "--resume_from_checkpoint"))
    assert any("nothing to resume" in r.getMessage() and "never-interrupted.incomplete" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "never-interrupted" / "model.safetensors").exists()
