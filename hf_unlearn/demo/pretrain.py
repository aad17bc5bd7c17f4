"""The demo CLIP: a word-level tokenizer over the world's vocabulary and a tiny CLIP pretrained contrastively on
captions of the world's columns, saved as a standard Hugging Face folder (model, image processor, tokenizer)."""
from __future__ import annotations

import logging
import math
import os
import time

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from .world import COLOR_NAMES, DOMAINS, IMAGE_SIZE, SHAPES

logger = logging.getLogger("hf_unlearn")

# Pretraining captions. The first six are how the reference model was captioned; the rest cover the phrasings the
# product's prompts (prompts.TRAIN_TEMPLATES) and pipeline("zero-shot-image-classification")'s default use.
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
WORDS = ["a", "an", "of", "in", "this", "is", "picture", "image", "."] + DOMAINS + SHAPES + COLOR_NAMES  # all trained
MAX_TEXT_LENGTH = 32  # text positions (tokens incl. BOS/EOS); captions use <= 10, the rest is headroom for prompts


def build_tokenizer():
    """A word-level tokenizer over the world's vocabulary, built offline; unknown words map to ``<|unk|>``.

    Saved with ``tokenizer_class: TokenizersBackend`` so ``AutoTokenizer`` / ``CLIPProcessor`` load ``tokenizer.json``
    as is (``CLIPTokenizer`` would rebuild it as a byte-level BPE). Text is lower-cased and split into words and
    punctuation runs; ``<|startoftext|> ... <|endoftext|>`` are added around it. ``<|endoftext|>`` has the highest id,
    so both CLIP pooling rules (first ``eos_token_id``; legacy argmax of ids) pool at the EOS.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, UNK] + list(dict.fromkeys(WORDS)) + [BOS, EOS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD, model_max_length=MAX_TEXT_LENGTH
    )


def demo_clip_config(tokenizer, hidden: int = 64, layers: int = 3, patch: int = 8):
    """A ViT on 4x4 patches of 8 px (17 tokens: cheap on CPU) and a one-layer causal text tower (captions are a
    bag of a few words; a second layer was slower to train and measurably worse). Special-token ids come from the
    tokenizer, so pooling (first ``eos_token_id``) and padding agree with it."""
    from transformers import CLIPConfig

    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                max_position_embeddings=MAX_TEXT_LENGTH, hidden_act="gelu", **ids)  # fmt: skip
    vision = dict(image_size=IMAGE_SIZE, patch_size=patch, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=4, hidden_act="gelu")  # fmt: skip
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _pixel_values(dataset: datasets.Dataset, image_processor) -> torch.Tensor:
    """All images as normalised CHW tensors. They are already 32 px, so resize / crop are no-ops and this is the
    saved processor's rescale + normalise, without its per-image overhead (a test checks they agree)."""
    images = np.stack([np.asarray(im.convert("RGB")) for im in dataset["image"]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * image_processor.rescale_factor
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


def _caption_table(tokenizer):
    """Every (template, label, domain, colour) caption tokenised once: ids and mask ``[T, L, D, C, len]``, plus the
    domain / colour each caption actually names (-1 where its template leaves it out)."""
    shape = (len(CAPTION_TEMPLATES), len(SHAPES), len(DOMAINS), len(COLOR_NAMES))
    texts = [t.format(c=c, d=d, color=k) for t in CAPTION_TEMPLATES for c in SHAPES for d in DOMAINS for k in COLOR_NAMES]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    t, _, d, k = torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij")
    names_domain = torch.tensor(["{d}" in x for x in CAPTION_TEMPLATES])[t]
    names_color = torch.tensor(["{color}" in x for x in CAPTION_TEMPLATES])[t]
    return (tokens["input_ids"].view(*shape, -1), tokens["attention_mask"].view(*shape, -1),
            torch.where(names_domain, d, -1), torch.where(names_color, k, -1))  # fmt: skip


def _matches(label, domain, color, cap_domain, cap_color) -> torch.Tensor:
    """``[images, captions]``: 1 where a caption in the batch is true of an image. Many are (e.g. "a circle." for
    every circle). Plain in-batch CLIP (even with identical captions as positives) treats those as negatives, which
    measurably slows learning (70% vs 84% zero-shot at equal steps), so the targets are spread over all of them."""
    return (
        (label[:, None] == label[None, :])
        & ((cap_domain[None, :] < 0) | (cap_domain[None, :] == domain[:, None]))
        & ((cap_color[None, :] < 0) | (cap_color[None, :] == color[:, None]))
    ).float()


def _caption_loss(model, pixels, label, domain, color, table, idx, g) -> torch.Tensor:
    """CLIP's loss on a batch of images, each with a random caption true of it, the targets spread over every
    caption in the batch that is true of an image (``_matches``)."""
    table_ids, table_mask, table_domain, table_color = table
    x = pixels[idx]
    x = torch.where(torch.rand(len(idx), 1, 1, 1, generator=g) < 0.5, x.flip(-1), x)  # mirrored shapes keep their class
    key = (torch.randint(len(CAPTION_TEMPLATES), (len(idx),), generator=g), label[idx], domain[idx], color[idx])
    ids, mask = table_ids[key], table_mask[key]
    width = int(mask.sum(1).max())
    logits = model(input_ids=ids[:, :width], attention_mask=mask[:, :width], pixel_values=x).logits_per_image
    return multi_positive_loss(logits, _matches(label[idx], domain[idx], color[idx], table_domain[key], table_color[key]))


def multi_positive_loss(logits: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy with each image's target spread over the captions ``match`` marks true of it
    (and each caption's over the images), not only over its own pair."""
    return 0.5 * (F.cross_entropy(logits, match / match.sum(1, keepdim=True))
                  + F.cross_entropy(logits.t(), (match / match.sum(0, keepdim=True)).t()))  # fmt: skip


def pretrain_demo_clip(dataset_dict: datasets.DatasetDict, output_dir: str, seed: int = 0, steps: int = 1200, batch_size: int = 128,
                       lr: float = 2e-3, hidden: int = 64, layers: int = 3, patch: int = 8, num_threads: int | None = None) -> str:
    """Contrastively pretrain a tiny CLIP from scratch on captions of the ``train`` split, and save it with its
    image processor and tokenizer to ``output_dir`` (a standard Hugging Face folder). Returns ``output_dir``."""
    from transformers import CLIPModel, CLIPProcessor

    threads_before = torch.get_num_threads()
    torch.set_num_threads(num_threads or threads_before)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    tokenizer, image_processor = build_tokenizer(), _image_processor()
    model = CLIPModel(demo_clip_config(tokenizer, hidden, layers, patch))
    train = dataset_dict["train"]
    pixels = _pixel_values(train, image_processor)
    label, domain, color = (torch.tensor(train[k]) for k in ("label", "domain", "color"))
    table = _caption_table(tokenizer)
    batch_size = min(batch_size, len(train))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, fused=True)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    start, order = time.time(), torch.empty(0, dtype=torch.long)
    try:
        for step in range(1, steps + 1):
            if len(order) < batch_size:  # epochs without replacement
                order = torch.cat([order, torch.randperm(len(train), generator=g)])
            idx, order = order[:batch_size], order[batch_size:]
            loss = _caption_loss(model, pixels, label, domain, color, table, idx, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if step % 100 == 0 or step == steps:
                logger.info("demo pretraining: step %d/%d, loss %.3f, %.0fs", step, steps, loss.item(), time.time() - start)
    finally:
        torch.set_num_threads(threads_before)
    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)  # safetensors
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
    return output_dir
