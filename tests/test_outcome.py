"""A run that trains but does not forget saves its model, says so in its card and report, and exits non-zero."""
import json

import pytest

from hf_unlearn.cli import EXIT_NOT_FORGOTTEN, console, main

from .helpers import FAST

NO_LEARNING = ["--forget_learning_rate", "1e-9", "--remind_learning_rate", "1e-9"]
STRICT = [a for a in FAST if a != "--allow_incomplete_forgetting"]


def _args(world, out, *extra):
    model_dir, data_dir = world
    return ["--model_name_or_path", model_dir, "--dataset", data_dir, "--forget", "label=square,domain=photo", "--output_dir", str(out), *extra]


def test_a_run_that_cannot_forget_saves_the_model_says_so_and_exits_non_zero(trained_world, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        console(_args(trained_world, out, *STRICT, *NO_LEARNING))
    assert exit_info.value.code == EXIT_NOT_FORGOTTEN == 3
    assert "FORGETTING FAILED" in capsys.readouterr().err
    assert (out / "model.safetensors").exists()  # nothing is lost
    report = json.loads((out / "unlearning_report.json").read_text())
    assert report["forgetting_achieved"] is False and report["metrics"]["unlearned"]["FA"] > 0.01
    card = (out / "README.md").read_text()
    assert "NOT unlearned" in card.splitlines()[card.splitlines().index("---", 1) + 2] and "was NOT forgotten" in card


def test_allow_incomplete_forgetting_exits_zero_and_still_reports_it(trained_world, tmp_path):
    report = main(_args(trained_world, tmp_path / "run", *FAST, *NO_LEARNING))
    assert report["forgetting_achieved"] is False
    assert "NOT forgotten" in (tmp_path / "run" / "README.md").read_text()
