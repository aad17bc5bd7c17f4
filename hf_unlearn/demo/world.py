"""The demo world's images: 32 px shapes (``label``) drawn in one of four visibly different styles (``domain``:
painting / cartoon / photo / sketch, PACS-like) and colours (``color``), as a ``datasets.DatasetDict``."""
from __future__ import annotations

import datasets
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ["circle", "square", "triangle", "star", "cross"]
DOMAINS = ["painting", "cartoon", "photo", "sketch"]  # PACS order (art_painting -> painting)
COLORS = {"red": (215, 35, 35), "green": (35, 160, 50), "blue": (35, 70, 215), "yellow": (240, 205, 25), "purple": (135, 45, 175)}
COLOR_NAMES = list(COLORS)
IMAGE_SIZE = 32
_SS = 4  # supersampling factor for anti-aliased masks


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of a shape of radius ~1 around the origin, with roughly equal visual size across shapes."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return 0.8 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        return 1.06 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return 1.1 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.1, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "cross":
        a, w = 1.0, 0.34
        return np.array([(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w),
                         (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)])  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def _densify(poly: np.ndarray, step: float = 0.15) -> np.ndarray:
    """Extra points along each edge, so a wobble can bend straight edges (hand-made look)."""
    out = []
    for p, q in zip(poly, np.roll(poly, -1, 0)):
        n = max(1, int(np.linalg.norm(q - p) / step))
        out.append(p + (q - p) * np.arange(n)[:, None] / n)
    return np.concatenate(out)


def _mask(points: np.ndarray, line_width: float = 0.0) -> np.ndarray:
    """Anti-aliased [0, 1] mask at 32 px: the filled polygon, or its closed outline if ``line_width`` > 0."""
    size = IMAGE_SIZE * _SS
    pts = [tuple(p) for p in (points * _SS).tolist()]
    im = Image.new("L", (size, size))
    if line_width > 0:
        ImageDraw.Draw(im).line(pts + pts[:1], fill=255, width=max(1, round(line_width * _SS)), joint="curve")
    else:
        ImageDraw.Draw(im).polygon(pts, fill=255)
    return np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX), np.float32) / 255


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency RGB noise in [0, 1]: a cells x cells random grid, bilinearly upsampled to 32 px."""
    grid = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
    return np.asarray(grid.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), np.float32) / 255


def _over(base: np.ndarray, layer, alpha: np.ndarray) -> np.ndarray:
    return base + (np.asarray(layer, np.float32) - base) * alpha[..., None]


def render_image(shape: str, domain: str, color: str, rng: np.random.Generator) -> Image.Image:
    """One 32x32 RGB image. The styles differ in background, fill, outline and texture, so they are easy to tell
    apart, while the shape stays recognisable in all of them."""
    n = IMAGE_SIZE
    rgb = np.array(COLORS[color], np.float32) + rng.normal(0, 12, 3)
    # Jitter, not arbitrary pose: a tiny ViT trained for a minute must be able to learn the shapes.
    radius = rng.uniform(9.5, 12.5)
    center = n / 2 + rng.uniform(-3.5, 3.5, 2)
    a = rng.uniform(-0.35, 0.35)
    poly = _unit_polygon(shape) @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)

    if domain == "photo":
        # A lit scene: muted gradient + mottled background with grain, shaded object with a drop shadow.
        d = rng.normal(size=2)
        d /= np.linalg.norm(d)
        grad = ((xx - n / 2) * d[0] + (yy - n / 2) * d[1])[..., None] / (n / 2)
        img = rng.uniform(60, 170) + rng.normal(0, 12, 3) + 25 * grad + 25 * (_smooth_noise(rng, 5) - 0.5)
        img = img + rng.normal(0, 5, (n, n, 3))
        fill = _mask(poly * radius + center)
        img = img * (1 - 0.3 * np.roll(fill, (1, 1), (0, 1))[..., None])
        light = rng.normal(size=2)
        light /= np.linalg.norm(light)
        shade = np.clip(1 + 0.25 * ((xx - center[0]) * light[0] + (yy - center[1]) * light[1]) / radius, 0.75, 1.25)
        img = _over(img, rgb * shade[..., None] + rng.normal(0, 7, (n, n, 3)), fill)
    elif domain == "painting":
        # Brushwork: blotchy pastel canvas with streaks, wobbly-edged mottled paint, everything slightly blurred.
        streak = rng.normal(0, 1, (n, 1, 3))
        streak = streak if rng.random() < 0.5 else streak.transpose(1, 0, 2)
        img = rng.uniform(150, 235, 3) + 70 * (_smooth_noise(rng, 4) - 0.5) + 10 * streak
        pts = _densify(poly)
        phase = np.linspace(0, 2 * np.pi, len(pts), endpoint=False) * rng.choice([5, 7]) + rng.uniform(0, 2 * np.pi)
        fill = _mask(pts * (1 + 0.035 * np.sin(phase))[:, None] * radius + center)
        paint = rgb * (0.7 + 0.6 * _smooth_noise(rng, 6)) + 10 * rng.normal(0, 1, (n, 1, 3))
        img = np.clip(_over(img, paint, fill), 0, 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(0.8)), np.float32)
    elif domain == "cartoon":
        # Flat colours: plain light background, flat fill, thick black outline, no texture at all.
        img = np.broadcast_to(rng.uniform(200, 255, 3), (n, n, 3)).astype(np.float32)
        img = _over(img, rgb, _mask(poly * radius + center))
        img = _over(img, (15, 15, 15), _mask(poly * radius + center, line_width=2.4))
    elif domain == "sketch":
        # Pencil on paper: near-white, no fill, a thin dark (colour-tinted) outline doubled by a looser stroke.
        img = np.full((n, n, 3), rng.uniform(235, 255), np.float32) + rng.normal(0, 3, (n, n, 1))
        ink = 0.45 * rgb + 0.55 * 40
        pts = _densify(poly)
        for width, strength in ((0.9, 1.0), (0.6, 0.55)):
            stroke = pts * (1 + rng.normal(0, 0.025, (len(pts), 1))) * radius + center + rng.normal(0, 0.3, 2)
            img = _over(img, ink, strength * _mask(stroke, line_width=width))
    else:
        raise ValueError(f"unknown domain {domain!r}")
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
            colors = rng.permutation(np.arange(n_per_group) % len(COLOR_NAMES))  # balanced inside each group
            rows += [(label, domain, int(c)) for c in colors]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    images = [render_image(SHAPES[l], DOMAINS[d], COLOR_NAMES[c], rng) for l, d, c in rows]
    columns = {"image": images, **{k: [r[i] for r in rows] for i, k in enumerate(("label", "domain", "color"))}}
    return datasets.Dataset.from_dict(columns, features=demo_features())


def make_demo_dataset(n_train_per_group: int = 400, n_test_per_group: int = 50, seed: int = 0) -> datasets.DatasetDict:
    """``train`` / ``test`` splits with ``n_*_per_group`` images per (label, domain) pair, colours balanced within
    each pair, rows shuffled. Deterministic for a seed; the two splits use independent random streams."""
    train_rng, test_rng = (np.random.default_rng([seed, i]) for i in range(2))
    splits = {"train": _make_split(n_train_per_group, train_rng), "test": _make_split(n_test_per_group, test_rng)}
    return datasets.DatasetDict(splits)
