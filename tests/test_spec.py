import numpy as np
import pytest

from hf_unlearn.spec import SpecError, SubgroupSpec, build_splits, ensure_class_label, group_masks

from .helpers import held_out_copy


def test_parse_and_resolve_by_name_and_index(toy_ds):
    spec = SubgroupSpec.parse("label=dog, domain=1")
    assert spec.conditions == (("label", "dog"), ("domain", "1"))
    assert spec.resolve(toy_ds.features) == {"label": 1, "domain": 1}
    mask = spec.mask(toy_ds)
    labels, domains = np.asarray(toy_ds["label"]), np.asarray(toy_ds["domain"])
    assert np.array_equal(mask, (labels == 1) & (domains == 1))


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("label", "expected 'column=value'"),
    ("label=dog,label=cat", "names a column twice"),
    ("=dog", "expected 'column=value'"),
    ("label==dog", "malformed condition 'label==dog'"),
])
def test_malformed_specs(text, message):
    with pytest.raises(SpecError, match=message):
        SubgroupSpec.parse(text)


def test_an_index_out_of_range_names_the_valid_range(toy_ds):
    with pytest.raises(SpecError, match=r"unknown value '99' for column 'label'; choices: \['cat', 'dog', 'fish'\] \(or their indices 0-2\)"):
        SubgroupSpec.parse("label=99").mask(toy_ds)


def test_unknown_column_names_choices(toy_ds):
    with pytest.raises(SpecError, match=r"unknown column 'colour'.*columns: \['domain', 'image', 'label'\]"):
        SubgroupSpec.parse("colour=red").mask(toy_ds)


def test_unknown_value_names_choices(toy_ds):
    with pytest.raises(SpecError, match=r"unknown value 'horse' for column 'label'; choices: \['cat', 'dog', 'fish'\]"):
        SubgroupSpec.parse("label=horse").mask(toy_ds)
    with pytest.raises(SpecError, match="unknown value '7'"):
        SubgroupSpec.parse("label=7").mask(toy_ds)


def test_default_retain_is_forget_class_minus_forget_rows(toy_ds):
    f, r, o, classes = group_masks(toy_ds, SubgroupSpec.parse("label=dog,domain=sketch"), None, "label")
    labels, domains = np.asarray(toy_ds["label"]), np.asarray(toy_ds["domain"])
    assert classes == [1]
    assert np.array_equal(r, (labels == 1) & (domains == 0))
    assert np.array_equal(o, labels != 1)
    assert not (f & r).any() and (f | r | o).all()


def test_empty_forget_overlap_and_empty_retain_are_refused(toy_ds):
    empty = toy_ds.filter(lambda d: d != 1, input_columns="domain")
    with pytest.raises(SpecError, match="matches no rows"):
        group_masks(empty, SubgroupSpec.parse("domain=sketch"), None, "label")
    with pytest.raises(SpecError, match="overlap on 4 rows"):
        group_masks(toy_ds, SubgroupSpec.parse("label=dog,domain=sketch"), SubgroupSpec.parse("label=dog"), "label")
    with pytest.raises(SpecError, match="retain set is empty"):
        group_masks(toy_ds, SubgroupSpec.parse("label=dog"), None, "label")


def test_string_class_column_is_encoded_and_non_label_column_refused(toy_ds):
    ds = toy_ds.cast_column("label", toy_ds.features["label"]).map(lambda r: {"name": ["a", "b"][r % 2]}, input_columns="label")
    assert ensure_class_label(ds, "name").features["name"].names == ["a", "b"]
    with pytest.raises(SpecError, match="unknown class column"):
        ensure_class_label(ds, "nope")


def test_build_splits_disjoint_calibration_and_cap(toy_ds):
    s = build_splits(toy_ds, SubgroupSpec.parse("label=dog,domain=sketch"), None, "label", calibration_fraction=0.25, max_other=5, seed=1)
    parts = [s.forget, s.retain, s.other, s.calib_forget, s.calib_retain, s.calib_other]
    flat = np.concatenate(parts)
    assert len(flat) == len(set(flat.tolist()))  # no row used twice
    assert len(s.calib_forget) == 1 and len(s.forget) == 3
    assert len(s.other) == 5
    again = build_splits(toy_ds, SubgroupSpec.parse("label=dog,domain=sketch"), None, "label", calibration_fraction=0.25, max_other=5, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, [again.forget, again.retain, again.other, again.calib_forget, again.calib_retain, again.calib_other]))


def test_build_splits_caps_forget_and_retain_training_rows_not_calibration(toy_ds):
    spec = SubgroupSpec.parse("label=dog,domain=sketch")
    full = build_splits(toy_ds, spec, None, "label", calibration_fraction=0.25, seed=1)
    capped = build_splits(toy_ds, spec, None, "label", calibration_fraction=0.25, seed=1, max_forget=2, max_retain=1)
    assert len(full.forget) > 2 and len(full.retain) > 1
    assert len(capped.forget) == 2 and len(capped.retain) == 1
    assert set(capped.forget) <= set(full.forget) and set(capped.retain) <= set(full.retain)
    assert np.array_equal(capped.calib_forget, full.calib_forget) and np.array_equal(capped.calib_retain, full.calib_retain)


def test_forget_calibration_has_its_own_cap(toy_ds):
    """A large forget set's calibration FA must resolve the target, so its cap is not the other groups'."""
    spec, retain = SubgroupSpec.parse("label=dog"), SubgroupSpec.parse("label=cat")
    shared = build_splits(toy_ds, spec, retain, "label", calibration_fraction=0.5, max_calibration=1, seed=1)
    own = build_splits(toy_ds, spec, retain, "label", calibration_fraction=0.5, max_calibration=1, seed=1, max_forget_calibration=3)
    assert len(shared.calib_forget) == 1 and len(own.calib_forget) == 3
    assert len(own.calib_retain) == len(shared.calib_retain) == 1 and len(own.calib_other) == 1
    assert len(own.forget) == len(shared.forget) - 2 and not set(own.forget) & set(own.calib_forget)


def test_without_keeps_the_conditions_beyond_a_column():
    spec = SubgroupSpec.parse("label=dog,domain=sketch")
    assert str(spec.without("label")) == "domain=sketch"
    assert SubgroupSpec.parse("label=dog").without("label") is None


def test_training_groups_mark_the_other_class_rows_that_share_the_forget_context(world):
    """The image-side forget term's target comes from these rows: other classes, the forget spec's domain."""
    import dataclasses

    from transformers import AutoProcessor

    from hf_unlearn.config import UnlearnArguments
    from hf_unlearn.groups import load_checked, prepare_groups

    model_dir, data_dir = world
    args = UnlearnArguments(model_name_or_path=model_dir, dataset=data_dir, forget="label=circle,domain=sketch")
    processor = AutoProcessor.from_pretrained(model_dir)
    assert prepare_groups(args, processor)[0].other_in_context is None  # computed only for the term that reads it
    groups, _ = prepare_groups(dataclasses.replace(args, forget_image_weight=1.0), processor)
    train = load_checked(args)["train"]
    domains, labels = np.asarray(train["domain"])[groups.splits.other], np.asarray(train["label"])[groups.splits.other]
    sketch, circle = train.features["domain"].str2int("sketch"), train.features["label"].str2int("circle")
    assert groups.other_in_context.tolist() == (domains == sketch).tolist()
    assert groups.other_in_context.any() and not groups.other_in_context.all() and not (labels == circle).any()


def test_proxy_dataset_images_join_the_proxy_pool_and_a_zero_shot_set_is_refused(world, tmp_path):
    """--proxy_dataset: unlabelled images of another dataset distilled on like the mixup proxies, never a held-out set."""
    import dataclasses

    import torch
    from transformers import AutoProcessor

    from hf_unlearn.config import UnlearnArguments
    from hf_unlearn.data import PROXY_POOL, ImageSet, preprocess
    from hf_unlearn.groups import load_checked, prepare_groups

    model_dir, data_dir = world
    processor = AutoProcessor.from_pretrained(model_dir)
    args = UnlearnArguments(model_name_or_path=model_dir, dataset=data_dir, forget="label=circle,domain=sketch")
    plain = prepare_groups(args, processor)[0].train["proxy"]
    groups, _ = prepare_groups(dataclasses.replace(args, proxy_dataset=data_dir, proxy_dataset_images=5), processor)
    pool = groups.train["proxy"]
    assert len(plain) == PROXY_POOL and len(pool) == PROXY_POOL + 5 and (pool.labels == -1).all()
    assert torch.equal(pool.pixel_values[:PROXY_POOL], plain.pixel_values)  # the mixups are unchanged
    train = load_checked(args)["train"]
    whole = ImageSet.from_dataset(preprocess(train, processor.image_processor, ["label"]), "label").pixel_values
    for image in pool.pixel_values[PROXY_POOL:]:  # each is one of the dataset's own images, not a blend
        assert (whole - image).abs().flatten(1).amax(1).min() < 1e-6
    other = held_out_copy(world, tmp_path)
    with pytest.raises(SpecError, match="also in --zeroshot_datasets"):
        prepare_groups(dataclasses.replace(args, proxy_dataset=other, zeroshot_datasets=f"{other}/"), processor)
    with pytest.raises(SpecError, match="is the --dataset itself"):
        prepare_groups(dataclasses.replace(args, zeroshot_datasets=f"{data_dir}/"), processor)
