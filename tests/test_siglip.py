"""A tiny SiglipModel goes through forget -> remind -> restore, chosen from its config alone."""
import json
import os

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

from hf_unlearn import family, losses
from hf_unlearn.cli import main
from tests.helpers import base_args


@pytest.fixture(scope="module")
def tiny_siglip(world, tmp_path_factory):
    """A random SigLIP with the demo world's tokenizer and image size, saved like a Hub checkpoint."""
    model_dir = world[0]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    clip_cfg = json.load(open(os.path.join(model_dir, "config.json")))
    size = clip_cfg["vision_config"]["image_size"]
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=size, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
    )
    out = tmp_path_factory.mktemp("siglip") / "tiny-siglip"
    SiglipModel(config).save_pretrained(out)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer).save_pretrained(out)
    return str(out)


def test_siglip_runs_all_three_stages(world, tiny_siglip, tmp_path):
    out = tmp_path / "run"
    args = base_args(world, out, "--forget_epochs", "2")
    args[args.index("--model_name_or_path") + 1] = tiny_siglip
    report = main(args)
    assert set(report["stages"]) == {"forget", "remind"} and len(report["restore"]["curve"]) == 2
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, SiglipModel)
    original = SiglipModel.from_pretrained(tiny_siglip)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, original.state_dict()[k])]
    assert changed and all(k.startswith("vision_model.encoder.layers.") for k in changed)
    assert model.logit_bias is not None  # SigLIP's own parameters survive the soup


def test_siglip_prompts_are_padded_to_full_length(world, tiny_siglip):
    model = SiglipModel.from_pretrained(tiny_siglip)
    tokens = family.tokenize(model, AutoTokenizer.from_pretrained(tiny_siglip), ["a circle.", "a picture of a small square."])
    assert tokens["input_ids"].shape == (2, 16) and "attention_mask" not in tokens


def test_siglip_keep_loss_is_the_sigmoid_loss(tiny_siglip):
    model = SiglipModel.from_pretrained(tiny_siglip)
    logits, labels = torch.tensor([[4.0, -4.0], [-4.0, 4.0]]), torch.tensor([0, 1])
    assert torch.allclose(family.keep_loss(model, logits, labels), losses.class_sigmoid_loss(logits, labels))
    # right answers with a wide margin cost little; wrong ones cost a lot
    assert losses.class_sigmoid_loss(logits, labels) < 0.05 < losses.class_sigmoid_loss(logits, 1 - labels)
