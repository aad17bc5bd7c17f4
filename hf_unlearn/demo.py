"""The offline default "world": a generated PACS-like image-caption dataset and a tiny CLIP pretrained on it.

Nothing here touches the network or any file outside the cache folder, so the default command works on a
fresh machine. Images are 32x32 shapes (``label``) drawn in one of four visibly different styles (``domain``:
painting / cartoon / photo / sketch) and colours (``color``); the CLIP is pretrained contrastively by our own
loop on captions built from those columns, and saved as a standard Hugging Face folder (model, image
processor, word-level tokenizer) that ``CLIPModel`` / ``CLIPProcessor`` / ``pipeline`` load offline.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

SHAPES = ["circle", "square", "triangle", "star", "cross"]
DOMAINS = ["painting", "cartoon", "photo", "sketch"]  # PACS order (art_painting -> painting)
COLORS = {
    "red": (215, 35, 35),
    "green": (35, 160, 50),
    "blue": (35, 70, 215),
    "yellow": (240, 205, 25),
    "purple": (135, 45, 175),
}
COLOR_NAMES = list(COLORS)

# Pretraining captions. The first six mirror how the reference model was captioned; the rest cover the phrasings
# the product's prompts (prompts.TRAIN_TEMPLATES) and pipeline("zero-shot-image-classification") use by default.
CAPTION_TEMPLATES = (
    "a {d} of a {c}.",
    "a {c} in a {d}.",
    "a picture of a {c}.",
    "a {c}.",
    "a {color} {c}.",
    "a {d} of a {color} {c}.",
    "an image of a {c}.",
    "a {c} in a picture.",
    "this is a {d} of a {c}.",
)
PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"
EXTRA_WORDS = ["a", "an", "of", "in", "this", "is", "the", "picture", "image", "drawing", ".", ","]
MAX_TEXT_LENGTH = 32  # text positions; captions use <= 11, the rest is headroom for user prompts

IMAGE_SIZE = 32
_SS = 4  # supersampling factor for anti-aliased masks
_CACHE_VERSION = "demo-v1"


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------
def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of a shape of radius ~1 around the origin, with roughly equal visual size across shapes."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return 0.85 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        return 1.0 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return 1.1 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.1, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "cross":
        a, w = 1.0, 0.34
        return np.array([(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)])
    raise ValueError(shape)


def _densify(poly: np.ndarray, step: float = 0.15) -> np.ndarray:
    """Extra points along each edge, so a wobble can bend straight edges (hand-drawn look)."""
    out = []
    for p, q in zip(poly, np.roll(poly, -1, 0)):
        n = max(1, int(np.linalg.norm(q - p) / step))
        out.append(p + (q - p) * np.arange(n)[:, None] / n)
    return np.concatenate(out)


def _masks(points: np.ndarray, fill: bool, line_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased fill and outline masks in [0, 1] at 32 px, drawn at 4x and box-downsampled."""
    size = IMAGE_SIZE * _SS
    pts = [tuple(p) for p in (points * _SS).tolist()]
    fill_mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    line_mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    if fill:
        im = Image.new("L", (size, size))
        ImageDraw.Draw(im).polygon(pts, fill=255)
        fill_mask = np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX), np.float32) / 255
    if line_width > 0:
        im = Image.new("L", (size, size))
        ImageDraw.Draw(im).line(pts + pts[:1], fill=255, width=max(1, round(line_width * _SS)), joint="curve")
        line_mask = np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX), np.float32) / 255
    return fill_mask, line_mask


def _smooth_noise(rng: np.random.Generator, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a cells x cells random grid bilinearly upsampled to 32 px."""
    grid = rng.random((cells, cells, channels)).astype(np.float32)
    t = torch.from_numpy(grid).permute(2, 0, 1)[None]
    up = F.interpolate(t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=True)
    return up[0].permute(1, 2, 0).numpy()


def _compose(base: np.ndarray, layer, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return base * (1 - a) + np.asarray(layer, np.float32) * a


def render_image(shape: str, domain: str, color: str, rng: np.random.Generator) -> Image.Image:
    """One 32x32 RGB image. Styles differ in background, fill, outline and texture so they are easy to tell apart."""
    rgb = np.array(COLORS[color], np.float32) + rng.normal(0, 12, 3)  # slight colour jitter
    # Jitter (not arbitrary pose): a tiny ViT trained for a minute must be able to learn the shapes.
    radius = rng.uniform(9.5, 12.5)
    center = IMAGE_SIZE / 2 + rng.uniform(-3.5, 3.5, 2)
    angle = rng.uniform(-0.35, 0.35)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    poly = _unit_polygon(shape) @ rot.T
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)

    if domain == "photo":
        # Textured, lit scene: gradient + mottled background with grain, shaded object, soft drop shadow.
        base = rng.uniform(60, 190, 3)
        d = rng.normal(size=2)
        d /= np.linalg.norm(d)
        grad = ((xx - 16) * d[0] + (yy - 16) * d[1])[..., None] / 16
        img = base + 35 * grad + 50 * (_smooth_noise(rng, 5, 3) - 0.5) + rng.normal(0, 9, (32, 32, 3))
        fill, _ = _masks(poly * radius + center, True, 0)
        shadow = np.roll(fill, (2, 2), (0, 1))
        img = img * (1 - 0.45 * shadow[..., None])
        light = rng.normal(size=2)
        light /= np.linalg.norm(light)
        shade = 1 + 0.35 * (((xx - center[0]) * light[0] + (yy - center[1]) * light[1]) / radius)
        obj = rgb * np.clip(shade, 0.55, 1.4)[..., None] + rng.normal(0, 7, (32, 32, 3))
        img = _compose(img, obj, fill)
    elif domain == "painting":
        # Brushy: blotchy pastel canvas with streaks, wobbly-edged mottled fill, then blurred.
        canvas = rng.uniform(150, 235, 3)
        streak = np.repeat(rng.normal(0, 1, (32, 1, 3)), 32, 1) if rng.random() < 0.5 else np.repeat(rng.normal(0, 1, (1, 32, 3)), 32, 0)
        img = canvas + 70 * (_smooth_noise(rng, 4, 3) - 0.5) + 10 * streak
        pts = _densify(poly)
        wobble = 1 + 0.06 * np.sin(np.linspace(0, 2 * np.pi, len(pts), endpoint=False) * rng.integers(2, 4) + rng.uniform(0, 6.3))
        fill, _ = _masks(pts * wobble[:, None] * radius + center, True, 0)
        mottle = 0.7 + 0.6 * _smooth_noise(rng, 6, 3)
        obj = rgb * mottle + 10 * np.repeat(rng.normal(0, 1, (32, 1, 3)), 32, 1)
        img = _compose(img, obj, fill)
        img = np.asarray(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8)), np.float32)
    elif domain == "cartoon":
        # Flat colours: plain light background, flat fill, thick black outline. No texture at all.
        bg = rng.uniform(200, 255, 3)
        img = np.broadcast_to(bg, (32, 32, 3)).astype(np.float32)
        fill, line = _masks(poly * radius + center, True, 2.4)
        img = _compose(img, rgb, fill)
        img = _compose(img, (15, 15, 15), line)
    elif domain == "sketch":
        # Pencil on paper: near-white background, thin dark (colour-tinted) outline, doubled by a second loose stroke.
        paper = rng.uniform(235, 255)
        img = np.full((32, 32, 3), paper, np.float32) + rng.normal(0, 3, (32, 32, 1))
        ink = 0.45 * rgb + 0.55 * 40
        pts = _densify(poly)
        for width, strength in ((0.9, 1.0), (0.6, 0.55)):
            jitter = 1 + rng.normal(0, 0.025, (len(pts), 1))
            _, line = _masks(pts * jitter * radius + center + rng.normal(0, 0.3, 2), False, width)
            img = _compose(img, ink, strength * line)
    else:
        raise ValueError(domain)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def demo_features() -> datasets.Features:
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=SHAPES),
            "domain": datasets.ClassLabel(names=DOMAINS),
            "color": datasets.ClassLabel(names=COLOR_NAMES),
        }
    )


def _make_split(n_per_group: int, rng: np.random.Generator) -> datasets.Dataset:
    rows = []
    for label in range(len(SHAPES)):
        for domain in range(len(DOMAINS)):
            colors = np.arange(n_per_group) % len(COLOR_NAMES)  # balanced colours inside each (label, domain)
            rows += [(label, domain, int(c)) for c in rng.permutation(colors)]
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    images = [render_image(SHAPES[l], DOMAINS[d], COLOR_NAMES[c], rng) for l, d, c in rows]
    return datasets.Dataset.from_dict(
        {"image": images, "label": [r[0] for r in rows], "domain": [r[1] for r in rows], "color": [r[2] for r in rows]},
        features=demo_features(),
    )


def make_demo_dataset(n_train_per_group: int = 400, n_test_per_group: int = 50, seed: int = 0) -> datasets.DatasetDict:
    """``train`` / ``test`` splits with ``n_*_per_group`` images per (label, domain) pair; deterministic per seed."""
    rng = np.random.default_rng(seed)
    train_rng, test_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**32, 2))
    return datasets.DatasetDict({"train": _make_split(n_train_per_group, train_rng), "test": _make_split(n_test_per_group, test_rng)})


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------
def build_tokenizer():
    """A word-level tokenizer over the world's vocabulary, built offline; unknown words map to ``<|unk|>``.

    Saved with ``tokenizer_class: TokenizersBackend`` so ``AutoTokenizer`` / ``CLIPProcessor`` load the
    ``tokenizer.json`` as is (``CLIPTokenizer`` would rebuild it as byte-level BPE). ``<|endoftext|>`` gets the
    highest id, so both of CLIP's pooling rules (first ``eos_token_id``, or legacy argmax of ids) pick the EOS.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(EXTRA_WORDS + DOMAINS + SHAPES + COLOR_NAMES + ["photo", "painting", "cartoon", "sketch"]))
    vocab = {tok: i for i, tok in enumerate([PAD, UNK] + words + [BOS, EOS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD, model_max_length=MAX_TEXT_LENGTH
    )


# ----------------------------------------------------------------------------------------------------------------
# Tiny CLIP
# ----------------------------------------------------------------------------------------------------------------
def demo_clip_config(vocab_size: int, pad_id: int, bos_id: int, eos_id: int, hidden: int = 96, layers: int = 3, patch: int = 4):
    from transformers import CLIPConfig

    text = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TEXT_LENGTH, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, hidden_act="gelu",
    )
    vision = dict(
        image_size=IMAGE_SIZE, patch_size=patch, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, hidden_act="gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _pixel_values(dataset: datasets.Dataset, image_processor) -> torch.Tensor:
    """All images as normalised CHW tensors. The images are already 32 px, so resize/crop are no-ops and the
    saved processor's rescale + normalise is reproduced exactly, without its per-image overhead."""
    images = np.stack([np.asarray(im.convert("RGB")) for im in dataset["image"]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * image_processor.rescale_factor
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


def _caption_table(tokenizer):
    """Every (template, label, domain, colour) caption, tokenised once: ids ``[T, L, D, C, len]`` plus a caption id
    per entry (identical strings share an id, so the loss can treat them as positives of each other)."""
    texts, ids = [], {}
    for t in CAPTION_TEMPLATES:
        for c in SHAPES:
            for d in DOMAINS:
                for col in COLOR_NAMES:
                    texts.append(t.format(c=c, d=d, color=col))
    caption_id = torch.tensor([ids.setdefault(s, len(ids)) for s in texts])
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    shape = (len(CAPTION_TEMPLATES), len(SHAPES), len(DOMAINS), len(COLOR_NAMES))
    return tokens["input_ids"].view(*shape, -1), tokens["attention_mask"].view(*shape, -1), caption_id.view(shape)


def pretrain_demo_clip(
    dataset_dict: datasets.DatasetDict,
    output_dir: str,
    seed: int = 0,
    epochs: int = 8,
    batch_size: int = 256,
    lr: float = 2e-3,
    max_steps: int | None = None,
    hidden: int = 96,
    layers: int = 3,
    patch: int = 4,
) -> str:
    """Contrastively pretrain a tiny CLIP on the ``train`` split's generated captions and save it (model, image
    processor, tokenizer) to ``output_dir`` as a standard Hugging Face folder. Returns ``output_dir``."""
    from transformers import CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    tokenizer = build_tokenizer()
    image_processor = _image_processor()
    config = demo_clip_config(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, hidden, layers, patch)
    model = CLIPModel(config)

    train = dataset_dict["train"]
    pixels = _pixel_values(train, image_processor)
    cols = {k: torch.tensor(train[k]) for k in ("label", "domain", "color")}
    table_ids, table_mask, table_cap = _caption_table(tokenizer)

    steps_per_epoch = len(train) // batch_size
    total = max_steps if max_steps is not None else epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    model.train()
    step, start = 0, time.time()
    while step < total:
        perm = torch.randperm(len(train), generator=g)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x = pixels[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5  # shapes keep their class under mirroring
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            tmpl = torch.randint(len(CAPTION_TEMPLATES), (len(idx),), generator=g)
            key = (tmpl, cols["label"][idx], cols["domain"][idx], cols["color"][idx])
            ids, mask, cap = table_ids[key], table_mask[key], table_cap[key]
            width = int(mask.sum(1).max())
            out = model(input_ids=ids[:, :width], attention_mask=mask[:, :width], pixel_values=x)
            # Identical captions in a batch are all correct matches: soft targets spread over them.
            same = (cap[:, None] == cap[None, :]).float()
            target = same / same.sum(1, keepdim=True)
            logits = out.logits_per_image
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            if step % 50 == 0 or step == total:
                logger.info("pretrain step %d/%d loss %.3f (%.0fs)", step, total, loss.item(), time.time() - start)

    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
    return output_dir


@torch.no_grad()
def zero_shot_subgroups(model, processor, dataset: datasets.Dataset) -> dict[tuple[str, str], float]:
    """Zero-shot accuracy per (domain, label): class heads are the normalised mean of "a {d} of a {c}." over the
    four domain words; prediction is the argmax cosine."""
    model.eval()
    texts = [f"a {d} of a {c}." for c in SHAPES for d in DOMAINS]
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    text = F.normalize(_features(model.get_text_features(**tokens)), dim=-1).view(len(SHAPES), len(DOMAINS), -1)
    heads = F.normalize(text.mean(1), dim=-1)
    pixels = _pixel_values(dataset, processor.image_processor)
    image = torch.cat([F.normalize(_features(model.get_image_features(pixel_values=p)), dim=-1) for p in pixels.split(512)])
    pred = (image @ heads.t()).argmax(1)
    labels, domains = torch.tensor(dataset["label"]), torch.tensor(dataset["domain"])
    out = {}
    for d, dn in enumerate(DOMAINS):
        for c, cn in enumerate(SHAPES):
            m = (labels == c) & (domains == d)
            out[(dn, cn)] = float((pred[m] == c).float().mean()) if m.any() else float("nan")
    out[("all", "all")] = float((pred == labels).float().mean())
    return out


def _features(output) -> torch.Tensor:
    """Projected embeddings (a tensor in transformers 4, a model output in 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
