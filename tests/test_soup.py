import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

from hf_unlearn.search import choose_alpha, search_alpha
from hf_unlearn.soup import SoupError, average_state_dicts, interpolate_state_dicts, soup_checkpoints

from .conftest import tiny_config


def sd(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g), "h": torch.randn(2, generator=g).half(), "steps": torch.tensor([seed, 7])}


def test_weight_one_and_zero_return_inputs_exactly():
    a, b = sd(1), sd(2)
    for key in a:
        assert torch.equal(interpolate_state_dicts(a, b, 1.0)[key], a[key])
    assert torch.equal(interpolate_state_dicts(a, b, 0.0)["w"], b["w"])
    assert torch.equal(interpolate_state_dicts(a, b, 0.0)["h"], b["h"])


def test_uniform_weights_give_mean_and_integer_buffers_are_copied():
    dicts = [sd(i) for i in range(3)]
    avg = average_state_dicts(dicts)
    assert torch.allclose(avg["w"], torch.stack([d["w"] for d in dicts]).mean(0), atol=1e-6)
    assert avg["h"].dtype == torch.float16
    assert torch.equal(avg["steps"], dicts[0]["steps"])  # copied, not averaged


@pytest.mark.parametrize("change", ["key", "shape", "dtype"])
def test_mismatched_state_dicts_refused(change):
    a, b = sd(1), sd(2)
    if change == "key":
        b["extra"] = b.pop("w")
    elif change == "shape":
        b["w"] = torch.zeros(4, 3)
    else:
        b["w"] = b["w"].double()
    with pytest.raises(SoupError):
        average_state_dicts([a, b])


def test_weights_must_sum_to_one():
    with pytest.raises(SoupError, match="sum to 1"):
        average_state_dicts([sd(1), sd(2)], [0.5, 0.6])


def _save_model(path, seed, **cfg):
    torch.manual_seed(seed)
    CLIPModel(tiny_config(**cfg)).save_pretrained(path)
    return path


def test_streaming_soup_of_checkpoint_folders_matches_in_memory(tmp_path):
    a, b = _save_model(tmp_path / "a", 0), _save_model(tmp_path / "b", 1)
    out = soup_checkpoints([str(a), str(b)], [0.3, 0.7], str(tmp_path / "out"))
    mixed = load_file(os.path.join(out, "model.safetensors"))
    expected = interpolate_state_dicts(load_file(a / "model.safetensors"), load_file(b / "model.safetensors"), 0.3)
    assert mixed.keys() == expected.keys()
    for k in mixed:
        assert torch.allclose(mixed[k], expected[k])
    assert CLIPModel.from_pretrained(out) is not None


def test_streaming_soup_handles_sharded_checkpoints(tmp_path):
    a = tmp_path / "a"
    torch.manual_seed(0)
    CLIPModel(tiny_config()).save_pretrained(a, max_shard_size="20KB")
    b = _save_model(tmp_path / "b", 1)
    assert os.path.exists(a / "model.safetensors.index.json")
    out = soup_checkpoints([str(a), str(b)], [1.0, 0.0], str(tmp_path / "out"))
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 1
    m_out, m_a = CLIPModel.from_pretrained(out), CLIPModel.from_pretrained(a)
    for (k, v), (_, w) in zip(m_out.state_dict().items(), m_a.state_dict().items()):
        assert torch.equal(v, w), k


def test_soup_refuses_mismatched_checkpoints_before_writing(tmp_path):
    a = _save_model(tmp_path / "a", 0)
    b = _save_model(tmp_path / "b", 0, projection_dim=8)
    with pytest.raises(SoupError, match="shape"):
        soup_checkpoints([str(a), str(b)], [0.5, 0.5], str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_soup_refuses_pickled_weights(tmp_path):
    (tmp_path / "p").mkdir()
    torch.save({"w": torch.zeros(1)}, tmp_path / "p" / "pytorch_model.bin")
    a = _save_model(tmp_path / "a", 0)
    with pytest.raises(SoupError, match="safetensors"):
        soup_checkpoints([str(a), str(tmp_path / "p")], [0.5, 0.5], str(tmp_path / "out"))


def test_choose_alpha_rule():
    curve = [
        {"alpha": 1.0, "FA": 0.00, "retention": 0.90},
        {"alpha": 0.8, "FA": 0.01, "retention": 0.95},
        {"alpha": 0.6, "FA": 0.10, "retention": 0.99},
    ]
    assert choose_alpha(curve, fa_target=0.02)["alpha"] == 0.8  # most retention under the FA target
    assert choose_alpha(curve, fa_target=0.2)["alpha"] == 0.6
    assert choose_alpha(curve, fa_target=-1)["alpha"] == 1.0  # none qualifies: lowest FA
    tied = [{"alpha": a, "FA": 0.02, "retention": r} for a, r in ((1.0, 0.90), (0.9, 0.95), (0.8, 0.99))]
    assert choose_alpha(tied, fa_target=0.01)["alpha"] == 1.0  # target missed: keep all the forgetting there is


def test_alpha_tolerance_keeps_the_largest_weight_near_the_best_retention():
    curve = [{"alpha": a, "FA": fa, "retention": r} for a, fa, r in
             ((1.0, 0.0, 1.040), (0.9, 0.0, 1.042), (0.8, 0.0, 1.048), (0.7, 0.0, 1.030), (0.5, 0.02, 1.060))]
    assert choose_alpha(curve, fa_target=0.01)["alpha"] == 0.8  # the best retention under the target
    assert choose_alpha(curve, fa_target=0.01, tolerance=0.01)["alpha"] == 1.0  # 0.008 below it: within the tolerance
    assert choose_alpha(curve, fa_target=0.01, tolerance=0.007)["alpha"] == 0.9  # 1.0 is 0.008 below: too far
    assert choose_alpha(curve, fa_target=0.03, tolerance=0.01)["alpha"] == 0.5  # nothing else is within 0.01 of 1.060
    missed = [{**p, "FA": 0.05} for p in curve]
    assert choose_alpha(missed, fa_target=0.01, tolerance=0.5)["alpha"] == 1.0  # target missed: the rule above, unchanged


def test_search_alpha_evaluates_each_weight():
    original = {"FA": 0.5, "RA": 0.8, "OA": 0.8}
    seen = []

    def evaluate(alpha):
        seen.append(alpha)
        return {"FA": 0.5 * (1 - alpha), "RA": 0.8 - 0.2 * alpha, "OA": 0.8}

    chosen, curve = search_alpha(evaluate, [1.0, 0.9, 0.5], fa_target=0.06, original=original)
    assert seen == [1.0, 0.9, 0.5]
    assert chosen["alpha"] == 0.9 and len(curve) == 3


def test_search_alpha_clipped_retention_stops_an_ra_gain_paying_for_an_oa_loss():
    original = {"FA": 0.5, "RA": 0.8, "OA": 0.8}
    # alpha 1: RA up by a quarter, OA down by an eighth (mean fraction 1.06); alpha 0.5: both whole
    calibration = {1.0: {"FA": 0.0, "RA": 1.0, "OA": 0.7}, 0.5: {"FA": 0.0, "RA": 0.8, "OA": 0.8}}
    chosen, _ = search_alpha(calibration.get, [1.0, 0.5], fa_target=0.01, original=original)
    assert chosen["alpha"] == 1.0
    chosen, curve = search_alpha(calibration.get, [1.0, 0.5], fa_target=0.01, original=original, clip=True)
    assert chosen["alpha"] == 0.5 and [round(p["retention"], 4) for p in curve] == [0.9375, 1.0]
