"""The recipe end to end on a tiny demo world, and every bad input refused before training."""
import io
import json
import os
import subprocess
import sys

import datasets
import pytest
import torch
from transformers import BertConfig, BertModel, CLIPModel, CLIPProcessor, pipeline

from hf_unlearn import trainers
from hf_unlearn.cli import main, parse_args
from hf_unlearn.data import DataError, preprocess
from hf_unlearn.checks import ModelError
from hf_unlearn.outputs import OutputExistsError
from hf_unlearn.pipeline import unlearn
from hf_unlearn.spec import SpecError

from tests.helpers import FAST, ROOT, base_args, held_out_copy


def test_recipe_end_to_end(world, tmp_path, capsys):
    out = tmp_path / "run"
    report = main(base_args(world, out, "--zeroshot_datasets", held_out_copy(world, tmp_path)))
    table = capsys.readouterr().out
    assert "FA" in table and "RA" in table and "OA" in table and "ZS/data" in table and "fraction" in table
    assert not os.path.exists(str(out) + ".incomplete")
    files = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "README.md", "unlearning_report.json", "restore_curve.png", "stages"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    saved = json.load(open(out / "unlearning_report.json"))
    assert saved["forget"] == "label=circle,domain=sketch"
    assert set(saved["metrics"]["unlearned"]) == {"FA", "RA", "OA", "ZS/data"}
    assert saved["restore"]["alpha"] in (1.0, 0.5) and len(saved["restore"]["curve"]) == 2
    # --top_k_modules 2, then the default fill to 16 in the blocks those two reach (the report keeps the ranking behind it)
    ranked, chosen = [r["module"] for r in saved["fisher_ranking"]], saved["selected_modules"]
    block = lambda m: int(m.split(".layers.")[1].split(".")[0])  # noqa: E731
    assert chosen[:2] == ranked[:2] and 2 < len(chosen) <= 16 and len(set(chosen)) == len(chosen)
    assert all(block(m) >= min(map(block, chosen[:2])) for m in chosen)
    assert report["composite_score"] == saved["composite_score"]
    from hf_unlearn import precision

    assert saved["compute"] == {"precision": "bf16 autocast" if precision.enabled() else "fp32", "inference": precision.inference_key(), "device": "cpu", "processes": 1,
                                "cpu_threads": torch.get_num_threads()}
    card = open(out / "README.md").read()
    assert card.startswith("---\n") and "machine-unlearning" in card and "| FA |" in card
    from huggingface_hub import ModelCard
    meta = ModelCard.load(str(out / "README.md")).data
    fa = [r for r in meta.eval_results if r.metric_name.startswith("forget")][0]
    assert abs(fa.metric_value - saved["metrics"]["unlearned"]["FA"]) < 1e-6 and "clip" in meta.tags
    model = CLIPModel.from_pretrained(out)
    processor = CLIPProcessor.from_pretrained(out)
    assert type(model) is CLIPModel and processor.tokenizer is not None
    image = datasets.load_dataset("parquet", data_files={"test": os.path.join(world[1], "test.parquet")})["test"][0]["image"]
    result = pipeline("zero-shot-image-classification", model=str(out))(image, candidate_labels=["circle", "square"])
    assert {r["label"] for r in result} == {"circle", "square"}
    # the forget stage's stage checkpoint is a plain CLIPModel too (adapters merged)
    assert type(CLIPModel.from_pretrained(out / "stages" / "forget")) is CLIPModel
    # the output is never silently overwritten
    with pytest.raises(OutputExistsError, match="overwrite_output_dir"):
        main(base_args(world, out))


def test_recipe_script_with_yaml_and_flag_override(world, tmp_path):
    cfg = tmp_path / "r.yaml"
    model_dir, data_dir = world
    cfg.write_text(f"model_name_or_path: {model_dir}\ndataset: {data_dir}\nforget: label=square\nretain: label=circle\nseed: 3\n")
    out = tmp_path / "script"
    args = ["--config", str(cfg), "--forget", "label=square,domain=photo", "--output_dir", str(out), *FAST, "--no_remind", "--no_lora"]
    assert parse_args(args).forget == "label=square,domain=photo" and parse_args(args).seed == 3
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "forget_remind_restore.py"), *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "composite score" in proc.stdout
    report = json.load(open(out / "unlearning_report.json"))
    assert report["retain"] == "label=circle" and "remind" not in report["stages"]


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(ROOT, "recipes", "configs"))))
def test_every_shipped_recipe_config_parses(name, tmp_path):
    """A shipped recipe with a stale or misplaced key would fail in the user's hands; each parses, and its settings
    reach the arguments (the demo-world ones name no model, so the offline demo is what they run on)."""
    import yaml

    path = os.path.join(ROOT, "recipes", "configs", name)
    args = parse_args(["--config", path, "--output_dir", str(tmp_path / "out")])
    with open(path) as f:
        values = yaml.safe_load(f)
    flat = {k: v for section in values.values() if isinstance(section, dict) for k, v in section.items()}
    flat.update({k: v for k, v in values.items() if not isinstance(v, dict) and k != "output_dir"})
    for key, value in flat.items():
        got = getattr(args, key)
        assert got == (type(got)(value) if isinstance(got, float) else value), key  # YAML reads "3e-4" as a string


def test_unknown_yaml_key_refused(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("forgett: label=dog\n")
    with pytest.raises(ValueError, match="unknown keys.*forgett"):
        parse_args(["--config", str(cfg)])


class _NoTraining:
    def __init__(self, *a, **k):
        raise AssertionError("training started despite bad input")


@pytest.mark.parametrize("flags, error, message", [
    (["--forget", "label=circle,domain=watercolour"], SpecError, "unknown value 'watercolour'.*choices"),
    (["--forget", "shape=circle"], SpecError, "unknown column 'shape'"),
    (["--forget", "label=circle,domain=sketch", "--retain", "label=circle"], SpecError, "overlap"),
    (["--forget", "label=circle"], SpecError, "retain set is empty"),
    (["--forget", "label=circle", "--retain", "label=square,color=nope"], SpecError, "unknown value 'nope'"),
    (["--class_column", "colour"], SpecError, "unknown class column 'colour'"),
    (["--eval_split", "validation"], DataError, "no 'validation' split"),
])
def test_bad_input_fails_before_training(world, tmp_path, monkeypatch, flags, error, message):
    monkeypatch.setattr(trainers.ForgetTrainer, "__init__", _NoTraining.__init__)
    with pytest.raises(error, match=message):
        unlearn(parse_args(base_args(world, tmp_path / "x") + flags))
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(str(tmp_path / "x") + ".incomplete")


def test_forget_spec_matching_nothing(world, tmp_path):
    model_dir, data_dir = world
    ds = datasets.load_dataset("parquet", data_files={"train": os.path.join(data_dir, "train.parquet"), "test": os.path.join(data_dir, "test.parquet")})
    ds = ds.filter(lambda l, d: not (l == 0 and d == 3), input_columns=["label", "domain"])  # no sketches of circles anywhere
    ds.save_to_disk(tmp_path / "nosketch")
    args = parse_args(["--model_name_or_path", model_dir, "--dataset", str(tmp_path / "nosketch"), "--forget", "label=circle,domain=sketch",
                       "--output_dir", str(tmp_path / "y")])
    with pytest.raises(SpecError, match="matches no rows"):
        unlearn(args)


def test_non_clip_model_refused(world, tmp_path):
    BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)).save_pretrained(tmp_path / "bert")
    args = parse_args(base_args(world, tmp_path / "z"))
    args.model_name_or_path = str(tmp_path / "bert")
    with pytest.raises(ModelError, match="'bert' model, not a CLIP dual encoder"):
        unlearn(args)


def test_existing_output_refused_before_loading(world, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.safetensors").write_bytes(b"old result")
    with pytest.raises(OutputExistsError):
        unlearn(parse_args(base_args(world, tmp_path / "taken")))
    assert (tmp_path / "taken" / "model.safetensors").read_bytes() == b"old result"


def test_corrupt_image_named_by_row(world):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PNG")
    ds = datasets.Dataset.from_dict({"image": [{"bytes": buf.getvalue(), "path": None}, {"bytes": b"not an image", "path": None}], "label": [0, 1]},
                                    features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))
    processor = CLIPProcessor.from_pretrained(world[0])
    with pytest.raises(DataError, match="corrupt image at row 1"):
        preprocess(ds, processor.image_processor, ["label"], "train")


def test_crash_leaves_no_output_and_rerun_resumes_finished_stage(world, tmp_path, monkeypatch):
    out = tmp_path / "crash"

    def boom(self, *a, **k):
        raise RuntimeError("simulated crash in remind")

    monkeypatch.setattr(trainers.RemindTrainer, "train", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        unlearn(parse_args(base_args(world, out)))
    assert not os.path.exists(out)  # nothing half-written where users look
    forget_stage = os.path.join(str(out) + ".incomplete", "stages", "forget")
    assert os.path.exists(os.path.join(forget_stage, "stage_complete.json"))
    weights = open(os.path.join(forget_stage, "model.safetensors"), "rb").read()

    monkeypatch.undo()
    monkeypatch.setattr(trainers.ForgetTrainer, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("forget stage redone")))
    unlearn(parse_args(base_args(world, out)))
    assert os.path.exists(out / "model.safetensors") and not os.path.exists(str(out) + ".incomplete")
    assert open(out / "stages" / "forget" / "model.safetensors", "rb").read() == weights


def test_each_stage_logs_its_loss_terms_and_calibration_metrics(world, tmp_path):
    """What every report_to backend receives (Trainer.log): loss terms per step, FA / RA / OA per stage."""
    out = tmp_path / "run"
    main(base_args(world, out))
    for stage, terms in (("forget", {"forget/forget", "forget/kd_retain", "forget/embed_other"}),
                         ("remind", {"remind/contrastive", "remind/forget_guard"})):
        log = json.load(open(out / "stages" / stage / "stage_complete.json"))["log"]
        keys = {k for row in log for k in row}
        assert terms <= keys, (stage, keys)
        assert {"calibration/FA", "calibration/RA", "calibration/OA"} <= keys
        assert not os.path.exists(out / "stages" / f"{stage}-run" / "checkpoint-2")  # checkpoints dropped once done


def test_a_run_with_training_phrasings_trains_both_stages_against_them(world, tmp_path):
    out = tmp_path / "run"
    main(base_args(world, out, "--forget_phrasings", "3"))
    for stage in ("forget", "remind"):
        record = json.load(open(out / "stages" / stage / "stage_complete.json"))
        assert '"forget_phrasings": 3' in json.dumps(record["settings"]), stage
