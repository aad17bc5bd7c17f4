"""The original model's held-out predictions are kept on disk across runs, keyed by its weights and the data."""
import json

from hf_unlearn import run as run_module

from .helpers import base_args


def test_another_subgroup_reuses_the_original_predictions_and_other_templates_do_not(world, tmp_path, monkeypatch):
    from hf_unlearn.cli import main

    monkeypatch.setenv("HF_UNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(run_module, "_HELD_OUT_MEMO", {})  # earlier tests in this process memoised the same world
    calls = []
    real = run_module.predict
    monkeypatch.setattr(run_module, "predict", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = main(base_args(world, tmp_path / "a"))
    assert len(calls) == 1  # one held-out set
    run_module._HELD_OUT_MEMO.clear()  # as in a new process
    again = main(base_args(world, tmp_path / "b"))
    main(base_args(world, tmp_path / "c", "--forget", "label=square,domain=photo"))
    assert len(calls) == 1  # neither the rerun nor another subgroup predicted with the original again
    assert again["metrics"]["original"] == first["metrics"]["original"]
    cached = list((tmp_path / "cache" / "original_predictions").glob("*.json"))
    assert len(cached) == 1 and len(json.loads(cached[0].read_text())[0]) == 40  # the tiny world's test split
    run_module._HELD_OUT_MEMO.clear()
    main(base_args(world, tmp_path / "d", "--eval_templates", "a photo of a {}."))  # other templates: predicted again
    assert len(calls) == 2 and len(list((tmp_path / "cache" / "original_predictions").glob("*.json"))) == 2
    # each entry's key is kept beside it, so a miss can be traced: these two differ in the templates alone
    keys = [json.loads(p.read_text()) for p in sorted((tmp_path / "cache" / "original_predictions" / "keys").glob("*.json"))]
    assert len(keys) == 2 and [i for i, (a, b) in enumerate(zip(*keys)) if a != b] == [3]
    assert {tuple(k[3]) for k in keys} >= {("a photo of a {}.",)}


PREPROCESS = """
import json, sys
from transformers import CLIPProcessor
from hf_unlearn.data import load_image_dataset, preprocess
ds = preprocess(load_image_dataset(sys.argv[1])["test"], CLIPProcessor.from_pretrained(sys.argv[2]).image_processor, ["label"], "test")
print(json.dumps([f["filename"] for f in ds.cache_files]))
"""


def test_preprocessed_pixels_are_reused_by_a_new_process_and_redone_for_another_processor(world, tmp_path):
    import os
    import subprocess
    import sys

    from transformers import CLIPProcessor

    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets")}

    def pixels_file(model_dir):
        out = subprocess.run([sys.executable, "-c", PREPROCESS, world[1], model_dir], env=env, capture_output=True, text=True, check=True)
        (path,) = json.loads(out.stdout.strip().splitlines()[-1])
        return path, os.stat(path).st_mtime_ns

    first = pixels_file(world[0])
    assert pixels_file(world[0]) == first  # the same file, not rewritten: keyed by the data's fingerprint and the processor
    other = tmp_path / "other-processor"
    processor = CLIPProcessor.from_pretrained(world[0])
    processor.image_processor.image_mean = [0.0, 0.0, 0.0]
    processor.save_pretrained(other)
    assert pixels_file(str(other))[0] != first[0]
