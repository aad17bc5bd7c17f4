"""The command-line entry points: one-line errors, the independent evaluator, the recipe's --help."""
import json
import os
import subprocess
import sys

import pytest

from hf_unlearn import eval_cli
from hf_unlearn.cli import console

from .helpers import ROOT, held_out_copy


def test_a_bad_setting_ends_in_one_line_and_exit_code_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        console(["--forget", "label=dog", "--forget_learning_rate", "-1", "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hf_unlearn: error: --forget_learning_rate -1.0: must be > 0"]
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(str(tmp_path / "out") + ".incomplete")


def test_the_command_line_answers_a_bad_setting_before_torch_loads():
    """The package, its command line (the recipe's and the evaluator's) and the check of every setting import no torch,
    transformers' models or datasets: --help and a bad value answer in about a second, and a Ctrl-C while the run's
    modules load is the command's own."""
    code = ("import sys; import hf_unlearn, hf_unlearn.eval_cli; from hf_unlearn.cli import console\n"
            "try:\n    console(['--method', 'ga', '--forget', 'label=dog', '--model_name_or_path', './no/such/model'])\n"
            "except SystemExit as e:\n    print(e.code, sorted(m for m in ('torch', 'datasets', 'hf_unlearn.pipeline') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.stdout.split("\n")[-2] == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("hf_unlearn: error: model path './no/such/model' does not exist")


@pytest.mark.parametrize("module", ["hf_unlearn.audit", "hf_unlearn.eval_cli"])
def test_the_audit_and_the_evaluator_answer_a_bad_setting_in_one_line_before_torch_loads(module):
    """``python -m <module>`` with a bad value: exit 2, the one line, no traceback, and torch and datasets never imported."""
    code = (f"import sys, runpy\nsys.argv = ['{module}', '--model', 'm', '--original', 'o', '--cpu_threads', '0']\n"
            f"try:\n    runpy.run_module('{module}', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    print(e.code, sorted(m for m in ('torch', 'datasets') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.stdout.split("\n")[-2] == "2 []", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "hf_unlearn: error: --cpu_threads 0: must be >= 1, or left out for every core"


def test_a_ctrl_c_while_the_audits_modules_load_is_one_line_and_exit_code_130(monkeypatch, capsys, world):
    import types

    from hf_unlearn.audit.__main__ import main as audit_main
    from hf_unlearn.cli import one_line_errors

    class Loading(types.ModuleType):  # the audit's runner, interrupted as it loads
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "hf_unlearn.audit.runner", Loading("hf_unlearn.audit.runner"))
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(audit_main, ["--model", world[0], "--original", world[0], "--dataset", world[1], "--forget", "label=circle,domain=sketch"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("hf_unlearn: interrupted.")


def test_a_ctrl_c_while_the_runs_modules_load_is_one_line_and_exit_code_130(monkeypatch, capsys, tmp_path):
    import types

    class Loading(types.ModuleType):  # the pipeline module, interrupted as it loads
        def __getattr__(self, name):
            if name == "unlearn":
                raise KeyboardInterrupt
            raise AttributeError(name)

    monkeypatch.setitem(sys.modules, "hf_unlearn.pipeline", Loading("hf_unlearn.pipeline"))
    with pytest.raises(SystemExit) as exit_info:
        console(["--forget", "label=dog", "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("hf_unlearn: interrupted.")


def test_debug_shows_the_traceback():
    from hf_unlearn.config import ConfigError

    with pytest.raises(ConfigError):
        console(["--forget", "label=dog", "--forget_epochs", "0", "--debug"])


def test_the_recipe_help_is_grouped_by_stage():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "forget_remind_restore.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for section in ("forget stage:", "remind stage:", "distillation from the frozen original (every stage):", "baselines' own settings:"):
        assert section in out
    assert "--anchor_kd_weight" in out  # the old name, kept as an alias


def test_the_independent_evaluator_runs_end_to_end(world, tmp_path):
    model_dir, data_dir = world
    result = eval_cli.main(["--model", model_dir, "--original", model_dir, "--dataset", data_dir, "--forget", "label=circle,domain=sketch",
                            "--zeroshot_datasets", held_out_copy(world, tmp_path), "--json", str(tmp_path / "eval.json")])
    assert result["original"] == result["unlearned"]  # the model against itself: nothing forgotten
    assert all(v == 1.0 for k, v in result["fractions"].items() if k != "forgetting")
    assert result["retention"]["kept"] and set(result["retention"]["checked"]) == {"RA", "OA", f"ZS/{os.path.basename(data_dir)}"}
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert set(saved["original"]) == {"FA", "RA", "OA", f"ZS/{os.path.basename(data_dir)}"}
    help_text = subprocess.run([sys.executable, "-m", "hf_unlearn.eval_cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--original" in help_text and "--forget" in help_text


def test_the_evaluator_reuses_the_originals_predictions_across_calls(world, tmp_path, monkeypatch):
    model_dir, data_dir = world
    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    from hf_unlearn import family, run

    calls, loads, processors = [], [], []
    real_cached, real_load, real_processor = run.original_predictions, family.load_model, family.load_processor
    # the original's predictions, made only where the cache has none
    monkeypatch.setattr(run, "original_predictions", lambda *a: real_cached(*a[:-1], lambda: calls.append(1) or a[-1]()))
    monkeypatch.setattr(family, "load_model", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    monkeypatch.setattr(family, "load_processor", lambda *a, **k: processors.append(1) or real_processor(*a, **k))
    argv = ["--model", model_dir, "--original", model_dir, "--dataset", data_dir, "--forget", "label=circle,domain=sketch"]
    first = eval_cli.main(argv)
    assert len(calls) == 1 and len(loads) == 2  # the original, then the model
    assert len(processors) == 2  # each model's processor once: the original's is not loaded again with its weights
    eval_cli.main(argv + ["--forget", "label=square,domain=photo"])  # another subgroup of the same data
    assert len(calls) == 1 and len(loads) == 3  # the model alone: the original is not loaded for cached predictions
    assert eval_cli.main(argv)["original"] == first["original"] and len(calls) == 1
    eval_cli.main(argv + ["--eval_templates", "a photo of a {}."])  # other templates: predicted again
    assert len(calls) == 2 and len(loads) == 6


def test_the_evaluator_checks_the_retention_bars_it_is_given(trained_world, tmp_path, capsys):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model_dir, data_dir = trained_world
    damaged = CLIPModel.from_pretrained(model_dir)
    with torch.no_grad():
        damaged.visual_projection.weight.neg_()  # every image embedding flipped: accuracy collapses
    damaged.save_pretrained(tmp_path / "damaged")
    CLIPProcessor.from_pretrained(model_dir).save_pretrained(tmp_path / "damaged")
    argv = ["--model", str(tmp_path / "damaged"), "--original", model_dir, "--dataset", data_dir, "--forget", "label=square,domain=photo"]
    result = eval_cli.main(argv)
    assert not result["retention"]["kept"] and set(result["retention"]["missed"]) == {"RA", "OA"}  # a run's bars
    assert "Retention LOST: RA " in capsys.readouterr().out
    result = eval_cli.main(argv + ["--retention_bars", "OA=0"])  # only OA, and a bar no model can miss
    assert result["retention"]["kept"] and result["retention"]["bars"] == {"OA": 0.0} and set(result["retention"]["checked"]) == {"OA"}
    assert "Retention kept: OA " in capsys.readouterr().out


@pytest.mark.parametrize("module", ["hf_unlearn.eval_cli", "hf_unlearn.audit"])
def test_the_evaluation_and_audit_commands_refuse_an_unknown_flag_in_one_line(module):
    """A recipe-only flag given to these two is refused as argparse does (exit 2), not with a traceback."""
    proc = subprocess.run([sys.executable, "-m", module, "--model", "m", "--original", "o", "--forget_learning_rate", "1e-3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: unrecognized arguments: --forget_learning_rate 1e-3" in proc.stderr and "Traceback" not in proc.stderr


def test_the_evaluator_runs_on_the_threads_it_is_given(world):
    import torch

    model_dir, data_dir = world
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not 1 already, so the flag has to act
    try:
        eval_cli.main(["--model", model_dir, "--original", model_dir, "--dataset", data_dir, "--forget", "label=circle,domain=sketch",
                       "--max_eval_samples", "8", "--cpu_threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_every_error_the_project_defines_ends_in_one_line():
    """The command line ends the project's errors in one line by their common base class, so an error class defined
    without it would end a user's run in a traceback."""
    import importlib
    import inspect
    import pkgutil

    import hf_unlearn
    from hf_unlearn.errors import ForgettingIncompleteError, UsageError

    defined = {}
    for info in pkgutil.walk_packages(hf_unlearn.__path__, "hf_unlearn."):
        if not info.name.endswith("__main__"):  # importing it would run it
            module = importlib.import_module(info.name)
            defined.update({c.__name__: c for _, c in inspect.getmembers(module, inspect.isclass)
                            if issubclass(c, Exception) and c.__module__ == info.name})
    assert {"ConfigError", "ModelError", "SpecError", "DataError", "StageSettingsError", "OutputExistsError",
            "OutputPathError", "HubPushError", "SoupError"} < defined.keys()
    assert [n for n, c in defined.items() if not issubclass(c, UsageError) and c is not ForgettingIncompleteError] == []
