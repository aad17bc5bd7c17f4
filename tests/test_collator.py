"""The collator's draws depend only on (seed, epoch, index): resumable and identical across process splits."""
import torch

from hf_unlearn.data import ImageSet, UnlearningCollator, random_view


def streams(n=12):
    g = torch.Generator().manual_seed(0)
    return {k: ImageSet(torch.randn(n, 3, 16, 16, generator=g), torch.randint(3, (n,), generator=g)) for k in ("forget", "retain", "other")}


def test_a_samples_draws_do_not_depend_on_its_batch():
    c = UnlearningCollator("forget", streams(), proxy=True, augment=True, seed=1)
    whole = c([0, 1, 2, 3])
    halves = [c([0, 1]), c([2, 3])]  # two processes, each half of the global batch
    for key in whole:
        assert torch.equal(whole[key]["pixel_values"], torch.cat([h[key]["pixel_values"] for h in halves])), key


def test_epoch_and_seed_change_the_draws():
    c = UnlearningCollator("forget", streams(), proxy=True, seed=1)
    first = c([0, 1, 2, 3])["retain"]["pixel_values"]
    c.set_epoch(1)
    assert not torch.equal(first, c([0, 1, 2, 3])["retain"]["pixel_values"])
    other = UnlearningCollator("forget", streams(), proxy=True, seed=2)
    assert not torch.equal(first, other([0, 1, 2, 3])["retain"]["pixel_values"])


def test_random_view_keeps_the_shape_and_is_reproducible():
    x = torch.randn(3, 16, 16)
    views = [random_view(x, torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], random_view(x, torch.Generator().manual_seed(0)))
    assert any(not torch.equal(v, x) for v in views)
    # a flip without a crop is exactly a mirror image
    full = random_view(x, torch.Generator().manual_seed(0), min_scale=1.0)
    assert torch.equal(full, x) or torch.equal(full, x.flip(-1))
