import pytest
import torch

from hf_unlearn import precision


def _cpu(monkeypatch, amx, avx512_bf16, mkldnn=True):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn)


@pytest.mark.parametrize(
    "amx, avx512_bf16, mkldnn, fast",
    [
        (True, False, True, True),  # Sapphire Rapids and later
        (False, True, True, True),  # AMD Zen 4: bf16 dot products without AMX
        (False, False, True, False),  # AVX-512 without bf16 (emulated, slower than fp32)
        (True, True, False, False),  # a torch build without oneDNN bf16
    ],
)
def test_auto_uses_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, amx, avx512_bf16, mkldnn, fast):
    _cpu(monkeypatch, amx, avx512_bf16, mkldnn)
    assert precision.bf16_fast("cpu") is fast
    assert precision.use_bf16("auto", "cpu") is fast
    assert precision.use_bf16("fp32", "cpu") is False
    assert precision.use_bf16("bf16", "cpu") is True


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        precision.use_bf16("fp16")


def test_bf16_inference_runs_a_bf16_copy_that_follows_the_weights(tiny_clip, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from hf_unlearn.evaluation import embed_images

    monkeypatch.setitem(precision._STATE, "bf16", True)
    tiny_clip.set_attn_implementation("eager")  # as the pipeline loads it on CPU
    x = torch.randn(10, 3, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = torch.nn.functional.normalize(tiny_clip.get_image_features(pixel_values=x).pooler_output.float(), dim=-1)
    first = embed_images(tiny_clip, x, batch_size=4)
    twin = precision.inference_model(tiny_clip)
    assert twin is not tiny_clip and twin.dtype == torch.bfloat16 and twin.config._attn_implementation == "sdpa"
    assert tiny_clip.dtype == torch.float32 and tiny_clip.config._attn_implementation == "eager"  # the model itself is untouched
    assert first.dtype == torch.float32 and torch.nn.functional.cosine_similarity(first, autocast).min() > 0.999
    assert precision.inference_model(tiny_clip) is twin  # kept while the weights are the same
    with torch.no_grad():  # a soup loaded into the same model in place must not be evaluated on the stale copy
        tiny_clip.vision_model.post_layernorm.weight.mul_(-1.0)
    assert precision.inference_model(tiny_clip) is not twin
    assert torch.nn.functional.cosine_similarity(embed_images(tiny_clip, x), first).max() < 0
    peft = get_peft_model(tiny_clip, LoraConfig(r=2, target_modules=["q_proj"]))
    assert precision.inference_model(peft) is peft  # a PEFT wrapper mid-training runs under autocast
    monkeypatch.setitem(precision._STATE, "bf16", False)
    assert precision.inference_model(tiny_clip) is tiny_clip and precision.inference_key() == "fp32"
