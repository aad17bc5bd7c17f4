"""Preprocessed pixels reach tensors unchanged through the fast Arrow path."""
import datasets
import numpy as np
import pytest
import torch

from hf_unlearn.data import DataError, ImageSet, nested_lists_to_array


def _pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 4, 5)).astype(np.float32)


def test_image_set_matches_datasets_torch_format_after_select_and_concat():
    a = datasets.Dataset.from_dict({"pixel_values": _pixels(7, 0), "label": list(range(7))})
    b = datasets.Dataset.from_dict({"pixel_values": _pixels(5, 1), "label": list(range(5))})
    ds = datasets.concatenate_datasets([a, b]).select([11, 0, 3, 7, 7])  # several chunks, an indices mapping
    fast = ImageSet.from_dataset(ds, "label")
    slow = ds.with_format("torch")[:]
    assert torch.equal(fast.pixel_values, slow["pixel_values"].float())
    assert torch.equal(fast.labels, slow["label"].long())
    assert fast.pixel_values.shape == (5, 3, 4, 5)


def test_ragged_pixels_are_refused_with_their_lengths():
    ds = datasets.Dataset.from_dict({"pixel_values": [[[1.0, 2.0]], [[1.0, 2.0, 3.0]]]})
    with pytest.raises(DataError, match="differ in shape"):
        nested_lists_to_array(ds.data.column("pixel_values"))


def test_image_sets_concatenate_row_by_row():
    a = ImageSet(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
    b = ImageSet(torch.ones(3, 3, 4, 4), torch.tensor([2, -1, 5]))
    c = ImageSet.concat(a, b.subset(torch.tensor([2, 0])))
    assert c.labels.tolist() == [0, 1, 5, 2]
    assert c.pixel_values[:2].eq(0).all() and c.pixel_values[2:].eq(1).all()


def test_a_parquet_folder_has_one_fingerprint_however_it_is_named(tmp_path, monkeypatch):
    """Caches keyed on the fingerprint (preprocessed pixels, the original's predictions) must hit whether the folder is
    named relatively, absolutely, or from another working directory."""
    from hf_unlearn.data import load_image_dataset

    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    datasets.Dataset.from_dict({"x": list(range(8))}).to_parquet(str(folder / "test.parquet"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    prints = [load_image_dataset(str(folder))["test"]._fingerprint]
    monkeypatch.chdir(tmp_path / "data")
    prints.append(load_image_dataset("toy")["test"]._fingerprint)
    monkeypatch.chdir(tmp_path / "elsewhere")
    prints.append(load_image_dataset("../data/toy")["test"]._fingerprint)
    assert len(set(prints)) == 1, prints
