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
