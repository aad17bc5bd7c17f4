"""The restore step reads both soup inputs from safetensors on the CPU, never the in-memory teacher, and its inputs
are checked before anything trains."""
import shutil

import pytest
from safetensors.torch import load_file, save_file

from hf_unlearn import pipeline
from hf_unlearn.cli import main
from hf_unlearn.soup import SoupError

from .helpers import base_args


def test_restore_works_with_the_teacher_on_the_meta_device(world, tmp_path, monkeypatch):
    real_restore = pipeline.restore

    def restore_without_teacher(run, unlearned, alphas):
        run.teacher.to("meta")  # any read of the teacher's weights from here on fails
        return real_restore(run, unlearned, alphas)

    monkeypatch.setattr(pipeline, "restore", restore_without_teacher)
    out = tmp_path / "run"
    report = main(base_args(world, out))
    assert len(report["restore"]["curve"]) == 2 and (out / "model.safetensors").exists()


def _original_with(world, tmp_path, change):
    model_dir, data_dir = world
    copy = tmp_path / "original"
    shutil.copytree(model_dir, copy)
    weights = load_file(copy / "model.safetensors")
    change(weights)
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    return (str(copy), data_dir)


def test_an_original_with_extra_buffers_still_soups(world, tmp_path):
    """Older Hub CLIP checkpoints carry persistent position_ids buffers that current models do not save."""
    def add_buffer(w):
        w["text_model.embeddings.position_ids"] = w["text_model.embeddings.position_embedding.weight"][:, 0].long()[None]

    report = main(base_args(_original_with(world, tmp_path, add_buffer), tmp_path / "run"))
    assert report["restore"]["alpha"] in (1.0, 0.5)


def test_an_original_missing_a_tensor_is_refused_before_training(world, tmp_path):
    def drop(w):
        w.pop("logit_scale")

    with pytest.raises(SoupError, match="lacks tensors.*logit_scale"):
        main(base_args(_original_with(world, tmp_path, drop), tmp_path / "run", "--alpha_grid", "0.5"))
    assert not (tmp_path / "run.incomplete" / "stages" / "forget").exists()


@pytest.mark.parametrize("scope, towers", [("text", {"text_model"}), ("both", {"text_model", "vision_model"})])
def test_selection_scope_text_and_both_tune_text_modules(world, tmp_path, scope, towers):
    out = tmp_path / scope
    report = main(base_args(world, out, "--selection_scope", scope, "--top_k_modules", "40", "--no_remind", "--forget_epochs", "4"))
    assert {m.split(".")[0] for m in report["selected_modules"]} == towers
    assert any(r["score"] > 0 for r in report["fisher_ranking"] if r["module"].startswith("text_model"))
    before, after = load_file(f"{world[0]}/model.safetensors"), load_file(out / "model.safetensors")
    moved = [k for k in after if k.startswith("text_model.encoder") and not (after[k] == before[k]).all()]
    assert moved, "no text weight changed"


def test_the_restore_search_reuses_the_last_stages_calibration_for_alpha_one(world, tmp_path, monkeypatch):
    real_restore = pipeline.restore
    evaluated = []

    def counting_restore(run, unlearned, alphas):
        real_calibration = run.calibration
        run.calibration = lambda model: evaluated.append(model) or real_calibration(model)
        try:
            return real_restore(run, unlearned, alphas)
        finally:
            del run.calibration

    monkeypatch.setattr(pipeline, "restore", counting_restore)
    report = main(base_args(world, tmp_path / "run", "--alpha_tolerance", "1"))
    curve = {p["alpha"]: p for p in report["restore"]["curve"]}
    assert len(evaluated) == 1 and set(curve) == {1.0, 0.5}  # only the soup at 0.5 is evaluated
    # --alpha_tolerance 1: any retention is near enough, so the largest weight under the FA target
    ok = [a for a, p in curve.items() if p["FA"] <= report["restore"]["fa_target"]]
    assert report["restore"]["alpha_tolerance"] == 1 and (not ok or report["restore"]["alpha"] == max(ok))
    last = report["stages"]["remind"]["calibration"]
    assert {k: curve[1.0][k] for k in ("FA", "RA", "OA")} == {k: last[f"calibration/{k}"] for k in ("FA", "RA", "OA")}
