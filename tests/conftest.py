import atexit
import os
import shutil
import tempfile

# Before anything imports huggingface_hub, which reads HF_HUB_OFFLINE once, at import: set later, a test that reached
# for the Hub would try the network instead of failing at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if "HF_UNLEARN_CACHE" not in os.environ:  # never the user's cache; removed when the session ends
    os.environ["HF_UNLEARN_CACHE"] = tempfile.mkdtemp(prefix="hf_unlearn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["HF_UNLEARN_CACHE"], ignore_errors=True)

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

torch.set_num_threads(2)


def tiny_config(**overrides) -> CLIPConfig:
    overrides.setdefault("projection_dim", 16)
    return CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2),
        **overrides,
    )


@pytest.fixture
def tiny_clip():
    torch.manual_seed(0)
    return CLIPModel(tiny_config()).eval()


def toy_dataset(n_per_group: int = 4, seed: int = 0) -> datasets.Dataset:
    """3 classes x 2 domains of random 16 px images with ClassLabel columns."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "label": [], "domain": []}
    for label in range(3):
        for domain in range(2):
            for _ in range(n_per_group):
                rows["image"].append(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))
                rows["label"].append(label)
                rows["domain"].append(domain)
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=["cat", "dog", "fish"]),
        "domain": datasets.ClassLabel(names=["photo", "sketch"]),
    })
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture
def toy_ds():
    return toy_dataset()


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from hf_unlearn.demo import ensure_demo

    cache = tmp_path_factory.mktemp("demo") / "world"
    return ensure_demo(str(cache), data_kwargs={"n_train_per_group": 6, "n_test_per_group": 2}, pretrain_kwargs={"steps": 30, "batch_size": 32})


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory):
    """A world whose CLIP has learnt enough to recognise some subgroups (square/photo: FA 25 % on test)."""
    from hf_unlearn.demo import ensure_demo

    cache = tmp_path_factory.mktemp("demo") / "trained"
    return ensure_demo(str(cache), data_kwargs={"n_train_per_group": 10, "n_test_per_group": 10}, pretrain_kwargs={"steps": 300, "batch_size": 32})
