"""Every script in examples/ runs, on the tiny world, so none can rot."""
import json
import os
import shutil
import subprocess
import sys

from .helpers import FAST, ROOT, held_out_copy


def test_pacs_example_script_trains_then_evaluates(world, tmp_path):
    model_dir, data_dir = world
    env = {**os.environ, "MODEL": model_dir, "DATASET": data_dir, "FORGET": "label=circle,domain=sketch", "ZEROSHOT": held_out_copy(world, tmp_path),
           "OUT": str(tmp_path / "out"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "pacs_sketch_dog.sh"), *FAST], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("composite score") == 2  # the recipe's table, then the independent evaluator's
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_python_api_example_runs(world, tmp_path):
    """The example uses the default demo cache: a tiny world stands in for it (marked as the default build)."""
    from hf_unlearn import demo

    cache = tmp_path / "cache"
    shutil.copytree(os.path.dirname(world[0]), cache / "demo-v1")
    (cache / "demo-v1" / "COMPLETE.json").write_text(json.dumps({"format": demo._FORMAT, "data": {}, "pretrain": {}}))
    env = {**os.environ, "HF_UNLEARN_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "unlearn_demo.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the unlearned model is a plain CLIP: CLIPModel" in proc.stdout and "composite" in proc.stdout
