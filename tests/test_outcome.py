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


def test_a_run_that_did_not_forget_is_never_pushed_to_the_hub(trained_world, tmp_path, capsys, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append("create"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, *a, **k: calls.append("upload"))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        console(_args(trained_world, out, *STRICT, *NO_LEARNING, "--push_to_hub", "--hub_model_id", "me/x"))
    assert exit_info.value.code == EXIT_NOT_FORGOTTEN and calls == []
    assert "NOT pushed to the Hub" in capsys.readouterr().err and (out / "model.safetensors").exists()


def test_require_deep_forgetting_counts_a_shallow_audit_verdict_as_not_forgotten(trained_world, tmp_path, capsys, monkeypatch):
    from hf_unlearn import report
    from hf_unlearn.audit import runner as audit

    real = audit.verdicts

    def one_shallow(results, args):
        out = real(results, args)
        for attack, v in out.items():
            v["verdict"] = "shallow" if attack == "relearn_retain_plus_forget" else "forgotten"
        return out

    monkeypatch.setattr(report, "forgetting_achieved", lambda *a: True)  # FA is not what this test is about
    monkeypatch.setattr(audit, "verdicts", one_shallow)
    fast_audit = ["--audit_relearn_steps", "2", "--audit_relearn_batch_size", "8", "--audit_relearn_forget_images", "2"]
    strict = [a for a in STRICT if a != "--no_audit"]
    with pytest.raises(SystemExit) as exit_info:
        console(_args(trained_world, tmp_path / "deep", *strict, *fast_audit, "--require_deep_forgetting"))
    err = capsys.readouterr().err
    assert exit_info.value.code == EXIT_NOT_FORGOTTEN and "FORGETTING FAILED" in err
    assert "SHALLOW under 1 of 4 attacks (relearning on retain + forget images)" in err and "--require_deep_forgetting" in err
    # the same run without the flag is a success: the verdict is reported, not enforced
    assert main(_args(trained_world, tmp_path / "plain", *strict, *fast_audit))["audit"]["verdicts"]["relearn_retain_plus_forget"]["verdict"] == "shallow"


def test_a_run_that_lost_retention_says_so_and_require_retention_fails_it(trained_world, tmp_path, capsys, monkeypatch):
    from hf_unlearn import report

    real = report.retention_fractions
    monkeypatch.setattr(report, "forgetting_achieved", lambda *a: True)  # FA is not what this test is about
    monkeypatch.setattr(report, "retention_fractions", lambda *a: {**real(*a), "OA": 0.9})  # other classes lost a tenth
    with pytest.raises(SystemExit) as exit_info:
        console(_args(trained_world, tmp_path / "strict", *STRICT, *NO_LEARNING, "--require_retention"))
    err = capsys.readouterr().err
    assert exit_info.value.code == EXIT_NOT_FORGOTTEN and "RETENTION FAILED: Retention LOST: OA 0.900 (bar 0.99)" in err and "--require_retention" in err
    # without the flag the loss is reported (table, report, card), not enforced
    result = main(_args(trained_world, tmp_path / "plain", *STRICT, *NO_LEARNING))
    assert result["retention"]["kept"] is False and result["retention"]["missed"] == {"OA": {"fraction": 0.9, "bar": 0.99}}
    assert result["retention"]["bars"] == {"RA": 0.98, "OA": 0.99, "ZS": 0.99} and set(result["retention"]["checked"]) == {"RA", "OA"}
    assert "Retention LOST: OA 0.900 (bar 0.99) of the original's accuracy." in (tmp_path / "plain" / "README.md").read_text()
    assert "Retention LOST" in capsys.readouterr().out


def test_the_table_of_a_report_from_before_the_retention_check_has_no_empty_line():
    from hf_unlearn.report import format_table

    result = {"forget": "label=x", "restore": {"alpha": 1.0, "fa_target": 0.01, "curve": [{"alpha": 1.0, "FA": 0.0}]},
              "metrics": {"original": {"FA": 0.9, "RA": 0.8}, "unlearned": {"FA": 0.0, "RA": 0.8}}, "composite_score": 1.0,
              "forgetting_achieved": True}
    table = format_table(result)
    assert table.splitlines()[-1].startswith("The subgroup 'label=x' was forgotten") and not table.endswith("\n")
    kept = {"kept": True, "checked": {"RA": {"fraction": 1.0, "bar": 0.98}}, "missed": {}}
    assert format_table(dict(result, retention=kept)).splitlines()[-1].startswith("Retention kept: RA 1.000")


def test_the_outcome_line_counts_calibration_images_and_says_when_the_target_allows_none():
    from hf_unlearn.report import outcome

    def result(calibration_fa, achieved, n=60, target=0.01):
        return {"forget": "label=x", "splits": {"calib_forget": n}, "forgetting_achieved": achieved,
                "restore": {"alpha": 1.0, "fa_target": target, "curve": [{"alpha": 1.0, "FA": calibration_fa}]},
                "metrics": {"original": {"FA": 0.94}, "unlearned": {"FA": 0.0}}}

    failed = outcome(result(1 / 60, False))  # one image of 60 is 1.67 %: above a 1 % target that 60 images cannot resolve
    assert "1.67% on calibration (1 of 60 images), above the target 1.00%" in failed
    assert "target allows none to be recognised" in failed and "--fa_target 0.0167 allows one" in failed
    assert "allows none" not in outcome(result(3 / 200, False, n=200))  # 200 images: 1 % allows two; three is a plain miss
    assert "3 of 200 images" in outcome(result(3 / 200, False, n=200))
    assert outcome(result(0.0, True)).endswith("0.00% on calibration (0 of 60 images; target 1.00%).")
    assert "--fa_target 0.0112 allows one" in outcome(result(1 / 90, False, n=90))  # 1/90 = 0.01111: rounded up, not to 0.0111
    older = {k: v for k, v in result(0.0, True).items() if k != "splits"}  # a report from before the splits: no count
    assert "on calibration (target" in outcome(older)
