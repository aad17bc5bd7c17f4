"""The original model's held-out metrics are kept on disk across runs, keyed by its weights and the data."""
import json

from hf_unlearn import run as run_module

from .helpers import base_args


def test_a_second_run_reuses_the_original_metrics_and_other_templates_do_not(world, tmp_path, monkeypatch):
    from hf_unlearn.cli import main

    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    calls = []
    real = run_module.evaluate_sets
    monkeypatch.setattr(run_module, "evaluate_sets", lambda *a, **k: calls.append(k.get("subgroups")) or real(*a, **k))
    first = main(base_args(world, tmp_path / "a"))
    run_module._HELD_OUT_MEMO.clear()  # as in a new process
    second = main(base_args(world, tmp_path / "b", "--forget", "label=circle,domain=sketch"))
    assert calls.count(True) == 1  # the held-out evaluation of the original ran once; calibration is not cached
    assert second["metrics"]["original"] == first["metrics"]["original"]
    cached = list((tmp_path / "cache" / "original_metrics").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["FA"] == first["metrics"]["original"]["FA"]
    run_module._HELD_OUT_MEMO.clear()
    main(base_args(world, tmp_path / "c", "--eval_templates", "a photo of a {}."))  # other templates: scored again
    assert calls.count(True) == 2 and len(list((tmp_path / "cache" / "original_metrics").glob("*.json"))) == 2
