"""Computed attribute columns: the dominant colour, and a subgroup spec on it."""
import datasets
import numpy as np
import pytest
from PIL import Image

from hf_unlearn.attributes import COLORS, add_attributes, dominant_color
from hf_unlearn.spec import SubgroupSpec


def solid(rgb, background=(128, 128, 128), size=32, frac=0.5):
    """An object of colour ``rgb`` filling the centre ``frac`` of the image, on a background."""
    img = np.full((size, size, 3), background, dtype=np.uint8)
    lo, hi = int(size * (1 - frac) / 2), int(size * (1 + frac) / 2)
    img[lo:hi, lo:hi] = rgb
    return Image.fromarray(img)


@pytest.mark.parametrize("rgb,name", [((220, 20, 30), "red"), ((30, 40, 220), "blue"), ((40, 200, 40), "green"),
                                      ((235, 220, 30), "yellow"), ((128, 128, 128), "gray"), ((250, 250, 250), "white"), ((10, 10, 10), "black")])
def test_dominant_color_names_the_central_object(rgb, name):
    assert dominant_color(solid(rgb)) == name


def test_background_colour_does_not_win_over_the_object():
    assert dominant_color(solid((220, 20, 30), background=(30, 40, 220), frac=0.6)) == "red"


def test_attribute_column_is_a_classlabel_usable_in_specs():
    rows = {"image": [solid((220, 20, 30)), solid((30, 40, 220)), solid((210, 30, 40))], "label": [0, 0, 1]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["car", "truck"])})
    dsd = add_attributes(datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}), ["color"])
    ds = dsd["train"]
    assert ds.features["color"].names == COLORS
    mask = SubgroupSpec.parse("label=car,color=red").mask(ds)
    assert list(mask) == [True, False, False]


def test_unknown_attribute_is_refused():
    with pytest.raises(ValueError, match="unknown attribute"):
        add_attributes(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": []})}), ["shape"])


def test_recipe_forgets_a_computed_subgroup(world, tmp_path):
    """The demo world without its colour column: --attributes color recomputes it and the spec uses it."""
    from hf_unlearn.cli import main
    from hf_unlearn.data import load_image_dataset
    from tests.helpers import base_args

    data = tmp_path / "no_colour"
    load_image_dataset(world[1]).remove_columns("color").save_to_disk(str(data))
    args = base_args((world[0], str(data)), tmp_path / "run", "--attributes", "color")
    args[args.index("--forget") + 1] = "label=circle,color=red"
    report = main(args)
    assert report["forget"] == "label=circle,color=red" and report["splits"]["forget"] > 0
    assert any("red" in group for group in report["subgroups"])  # per-subgroup table over the computed column
