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


def test_alternating_other_and_proxy_gives_each_primary_image_one_of_them():
    s = streams(64)
    plain = UnlearningCollator("forget", s, proxy=True, seed=1)
    alt = UnlearningCollator("forget", s, proxy=True, seed=1, alternate_other_proxy=True)
    idx = list(range(32))
    a, b = plain(idx), alt(idx)
    assert len(b["other"]["index"]) + len(b["proxy"]["index"]) == 32 and 0 < len(b["other"]["index"]) < 32
    for k in ("forget", "retain"):  # the streams every image keeps are drawn as without the option
        assert torch.equal(a[k]["pixel_values"], b[k]["pixel_values"])
    # the rows kept are the ones the full draw made, and which ones depends on the image, not on its batch
    assert set(b["other"]["index"].tolist()) <= set(a["other"]["index"].tolist())
    halves = [alt(idx[:16]), alt(idx[16:])]
    for k in ("other", "proxy"):
        assert torch.equal(b[k]["index"], torch.cat([h[k]["index"] for h in halves if k in h]))
    # a batch whose coins all fall one way carries no empty stream
    one = next(alt([i]) for i in range(64) if "proxy" not in alt([i]))
    assert set(one) == {"forget", "retain", "other"}


def test_alternating_with_augmentation_stays_a_function_of_each_image():
    alt = UnlearningCollator("forget", streams(64), proxy=True, seed=1, augment=True, alternate_other_proxy=True)
    whole, halves = alt(list(range(8))), [alt([0, 1, 2, 3]), alt([4, 5, 6, 7])]
    for k in whole:
        assert torch.equal(whole[k]["pixel_values"], torch.cat([h[k]["pixel_values"] for h in halves if k in h])), k


def test_only_the_methods_trainers_get_proxies_so_a_baseline_keeps_every_other_class_image():
    from types import SimpleNamespace

    from hf_unlearn.stages import stage_collator
    from hf_unlearn.trainers import ForgetTrainer, RemindTrainer
    from hf_unlearn.trainers.baselines import CLIPEraseTrainer

    run = SimpleNamespace(groups=SimpleNamespace(train=streams(64)), args=SimpleNamespace(seed=0, augment=False, alternate_other_proxy=True))
    config = SimpleNamespace(proxy_weight=0.5)
    for cls, primary in ((ForgetTrainer, "forget"), (RemindTrainer, "retain")):
        batch = stage_collator(run, cls, config, primary)(list(range(32)))
        assert len(batch["other"]["index"]) + len(batch["proxy"]["index"]) == 32
    baseline = stage_collator(run, CLIPEraseTrainer, config, "forget")(list(range(32)))
    assert "proxy" not in baseline and len(baseline["other"]["index"]) == 32
    assert "proxy" not in stage_collator(run, ForgetTrainer, SimpleNamespace(proxy_weight=0.0), "forget")(list(range(4)))
