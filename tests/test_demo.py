"""The offline demo world: deterministic generated data, and a pretrained folder that standard loaders accept."""
import os

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, CLIPModel, CLIPProcessor, pipeline

from hf_unlearn import demo

TINY_DATA = {"n_train_per_group": 2, "n_test_per_group": 1}
TINY_PRETRAIN = {"steps": 3, "batch_size": 16}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return demo.ensure_demo(str(tmp_path_factory.mktemp("demo") / "world"), data_kwargs=TINY_DATA, pretrain_kwargs=TINY_PRETRAIN)


@pytest.fixture(scope="module")
def clip(world):
    return CLIPModel.from_pretrained(world[0]).eval(), CLIPProcessor.from_pretrained(world[0])


def _pixels(split):
    return [np.asarray(im) for im in split["image"]]


def test_dataset_is_deterministic_with_classlabel_columns():
    a, b = demo.make_demo_dataset(**TINY_DATA, seed=0), demo.make_demo_dataset(**TINY_DATA, seed=0)
    assert {k: len(v) for k, v in a.items()} == {"train": 2 * 20, "test": 20}
    for split in ("train", "test"):
        assert a[split]["label"] == b[split]["label"] and a[split]["color"] == b[split]["color"]
        assert all((x == y).all() for x, y in zip(_pixels(a[split]), _pixels(b[split])))
    other = demo.make_demo_dataset(**TINY_DATA, seed=1)
    assert not all((x == y).all() for x, y in zip(_pixels(a["train"]), _pixels(other["train"])))

    features = a["train"].features
    assert features["domain"].names == ["painting", "cartoon", "photo", "sketch"]
    assert features["label"].names == demo.SHAPES and features["color"].names == demo.COLOR_NAMES
    assert isinstance(features["image"], datasets.Image)
    groups = {(l, d) for l, d in zip(a["train"]["label"], a["train"]["domain"])}
    assert len(groups) == len(demo.SHAPES) * len(demo.DOMAINS)
    im = a["train"][0]["image"]
    assert im.size == (32, 32) and im.mode == "RGB"


def test_styles_look_different():
    rng = np.random.default_rng(0)
    img = {d: np.asarray(demo.render_image("square", d, "blue", rng), np.float32) for d in demo.DOMAINS}
    assert img["sketch"].mean() > 200 and (img["sketch"] < 150).any()  # white paper, dark lines
    assert (img["cartoon"].max(-1) < 40).any()  # black outline
    assert img["photo"].std(axis=(0, 1)).mean() > img["cartoon"][:4, :4].std()  # textured vs flat background


def test_cache_layout_parquet_and_reuse(world, tmp_path):
    model_dir, data_dir = world
    assert sorted(os.listdir(data_dir)) == ["test.parquet", "train.parquet"]
    assert not [f for f in os.listdir(os.path.dirname(os.path.dirname(model_dir))) if f.startswith(".demo-")]
    files = {s: os.path.join(data_dir, f"{s}.parquet") for s in ("train", "test")}
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path))
    assert loaded["train"].features == demo.demo_features() and len(loaded["test"]) == 20
    assert "model.safetensors" in os.listdir(model_dir)

    mtime = os.path.getmtime(os.path.join(model_dir, "model.safetensors"))
    cache = os.path.dirname(model_dir)
    assert demo.ensure_demo(cache, data_kwargs=TINY_DATA, pretrain_kwargs=TINY_PRETRAIN) == world  # reused, not rebuilt
    assert os.path.getmtime(os.path.join(model_dir, "model.safetensors")) == mtime


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        demo.ensure_demo(str(tmp_path), data_kwargs=TINY_DATA, pretrain_kwargs=TINY_PRETRAIN)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_standard_loaders_work_offline(world, clip):
    model, processor = clip
    assert type(AutoTokenizer.from_pretrained(world[0])) is type(processor.tokenizer)
    assert model.config.vision_config.image_size == 32 and processor.image_processor.crop_size["height"] == 32
    classifier = pipeline("zero-shot-image-classification", model=world[0])
    out = classifier(datasets.load_dataset("parquet", data_files=os.path.join(world[1], "test.parquet"))["train"][0]["image"],
                     candidate_labels=demo.SHAPES)
    assert sorted(r["label"] for r in out) == sorted(demo.SHAPES)


def test_fast_pixel_path_matches_the_saved_processor(world, clip):
    _, processor = clip
    ds = demo.make_demo_dataset(**TINY_DATA)["test"].select(range(4))
    expected = processor(images=list(ds["image"]), return_tensors="pt")["pixel_values"]
    assert torch.allclose(demo._pixel_values(ds, processor.image_processor), expected, atol=1e-5)


def test_tokenizer_unknown_words_and_special_tokens(clip):
    model, processor = clip
    tok = processor.tokenizer
    ids = tok("A Zebra sketch!")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert ids[1:-1] == [tok.convert_tokens_to_ids("a"), tok.unk_token_id, tok.convert_tokens_to_ids("sketch"), tok.unk_token_id]
    assert tok.eos_token_id == max(tok.get_vocab().values())  # both CLIP pooling rules pick the EOS
    cfg = model.config.text_config
    assert (cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id) == (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id)
    assert len(tok) == cfg.vocab_size
    with torch.no_grad():  # unknown words embed without crashing
        model.get_text_features(**tok(["a unicorn in a spaceship."], return_tensors="pt"))


def test_text_pooling_uses_the_eos_position(clip):
    model, processor = clip
    tok = processor.tokenizer

    def embed(texts):
        with torch.no_grad():
            return model.get_text_features(**tok(texts, padding=True, return_tensors="pt")).pooler_output

    short = "a sketch of a circle."
    alone, padded = embed([short]), embed([short, "this is a painting of a red circle in a picture."])
    assert tok([short, "this is a painting of a red circle."], padding=True)["input_ids"][0][-1] == tok.pad_token_id
    assert torch.allclose(alone[0], padded[0], atol=1e-5)  # padding after the EOS changes nothing
    a, b = embed(["a sketch of a circle."]), embed(["a sketch of a square."])
    assert not torch.allclose(a, b, atol=1e-4)  # a word just before the EOS still matters



def test_the_project_loads_models_without_hub_kernels(world):
    """transformers fetches compiled "hub kernels" for a GPU by default where the `kernels` package is installed (it is
    a dependency of transformers 5.25); like remote code, never, and offline the fetch fails at the first model.eval()."""
    from hf_unlearn.family import load_clip

    model, _ = load_clip(world[0])
    assert model.use_kernels is False and model.eval().use_kernels is False
