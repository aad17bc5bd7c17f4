"""Publishing on the Hub: only the network call at the huggingface_hub boundary is replaced."""
import json
import os

import pytest
from huggingface_hub import HfApi, ModelCard
from transformers import CLIPModel

from hf_unlearn.cli import main
from hf_unlearn.hub import HubPushError
from tests.helpers import base_args


class _FakeRepo(str):
    repo_id = "me/clip-no-sketch-circles"


def test_push_uploads_the_final_folder_and_the_card_carries_the_metrics(world, tmp_path, monkeypatch):
    calls = {}

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None, **kw):
        calls["create"] = dict(repo_id=repo_id, private=private, exist_ok=exist_ok)
        return _FakeRepo(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, ignore_patterns=None, commit_message=None, **kw):
        # what would leave the machine: every file under folder_path not matched by ignore_patterns
        files = sorted(os.path.relpath(os.path.join(d, f), folder_path) for d, _, fs in os.walk(folder_path) for f in fs)
        calls["upload"] = dict(repo_id=repo_id, folder=folder_path, ignore=ignore_patterns, files=files)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "run"
    report = main(base_args(world, out, "--push_to_hub", "--hub_model_id", "me/clip-no-sketch-circles", "--hub_private_repo"))

    assert calls["create"] == dict(repo_id="me/clip-no-sketch-circles", private=True, exist_ok=True)
    up = calls["upload"]
    assert up["repo_id"] == "me/clip-no-sketch-circles" and os.path.samefile(up["folder"], out)
    assert {"model.safetensors", "config.json", "README.md", "unlearning_report.json", "restore_curve.png",
            "processor_config.json", "tokenizer.json"} <= set(up["files"])
    assert "stages/*" in up["ignore"]  # stage checkpoints stay local unless asked for
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in up["files"])
    assert report["hub_url"].endswith("me/clip-no-sketch-circles")

    card = ModelCard.load(str(out / "README.md"))
    meta = card.data
    assert {"clip", "machine-unlearning", "zero-shot-image-classification"} <= set(meta.tags)
    saved = json.load(open(out / "unlearning_report.json"))["metrics"]["unlearned"]
    by_name = {r.metric_name: r.metric_value for r in meta.eval_results}
    assert abs(by_name["forget accuracy (FA)"] - saved["FA"]) < 1e-6
    assert abs(by_name["retain accuracy (RA)"] - saved["RA"]) < 1e-6
    assert abs(by_name["other-class accuracy (OA)"] - saved["OA"]) < 1e-6


def test_push_with_stages_includes_them(world, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: _FakeRepo(repo_id))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: seen.update(kw))
    main(base_args(world, tmp_path / "run", "--push_to_hub", "--hub_model_id", "me/x", "--hub_push_stages"))
    assert seen["ignore_patterns"] is None


def test_offline_push_fails_clearly_and_keeps_the_local_model(world, tmp_path, monkeypatch):
    def no_network(self, *a, **kw):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(HfApi, "create_repo", no_network)
    out = tmp_path / "run"
    with pytest.raises(HubPushError, match="saved locally") as err:
        main(base_args(world, out, "--push_to_hub", "--hub_model_id", "me/x"))
    assert str(out) in str(err.value)
    assert not os.path.exists(str(out) + ".incomplete")
    assert {"model.safetensors", "README.md", "unlearning_report.json"} <= set(os.listdir(out))
    CLIPModel.from_pretrained(out)  # intact and loadable


def test_a_hub_id_without_push_says_nothing_is_pushed(world, tmp_path, monkeypatch, caplog):
    import logging

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append("create"))
    with caplog.at_level(logging.WARNING, logger="hf_unlearn"):
        main(base_args(world, tmp_path / "run", "--hub_model_id", "me/x"))
    assert calls == [] and any("--push_to_hub is not" in r.getMessage() for r in caplog.records)
