"""Procedural images that are none of the CIFAR-10 classes: to fit and to measure the out-of-distribution detector.

Every family draws from its own seeded generator at a random size and goes through the app's own preprocessing
(images.to_model_input), as an upload would. Training, fitting and benchmarks use disjoint seeds (TRAIN_SEED,
FIT_SEED, BENCH_SEED), so the benchmark's images are never seen while training or fitting. No image comes from a third-party package.
"""
import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .images import INPUT_SIZE, to_model_input

TRAIN_SEED = 0  # seeds of the outliers shown in training (outlier exposure), offset by the run's --seed
FIT_SEED = 500_009  # seeds of the held-out outliers the detector's score is chosen on
BENCH_SEED = 1_000_003  # seeds of the benchmark's outliers: never used in training or fitting
WORDS = ("the", "model", "error", "file", "open", "save", "data", "cancel", "OK", "settings", "2026", "page",
         "login", "user", "help", "invoice", "total", "chapter", "figure", "table", "x = y + 1", "Σ", "#42")


def _colour(rng):
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _side(rng):
    return int(rng.integers(32, 161))  # pixels: uploads come at many sizes, all resized to 32


def noise(rng):
    """Uniform, Gaussian or salt-and-pepper noise, grey or colour, sometimes blurred into blobs."""
    side, channels = _side(rng), int(rng.choice([1, 3]))
    kind = rng.integers(3)
    if kind == 0:
        arr = rng.integers(0, 256, (side, side, channels))
    elif kind == 1:
        arr = rng.normal(rng.uniform(60, 200), rng.uniform(20, 80), (side, side, channels))
    else:
        arr = np.where(rng.random((side, side, 1)) < 0.5, 0, 255) * np.ones(channels)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8).repeat(3 // channels, axis=2))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, side / 12)))
    return img


def flat(rng):
    """One colour, with a little sensor-like noise."""
    side = _side(rng)
    arr = np.array(_colour(rng), np.float64) + rng.normal(0, rng.uniform(0, 6), (side, side, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def gradient(rng):
    """A linear or radial blend between two colours."""
    side = _side(rng)
    yy, xx = np.mgrid[0:side, 0:side] / max(side - 1, 1)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)
    else:
        cx, cy = rng.random(2)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))


def pattern(rng):
    """Stripes, checkerboards, grids or dots in two colours, at a random period and angle."""
    side = _side(rng)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, side / 2)
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    kind = rng.integers(4)
    if kind == 0:
        mask = np.sin(2 * np.pi * u / period) > 0
    elif kind == 1:
        mask = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif kind == 2:
        width = rng.uniform(1, period / 3)
        mask = ((u % period) < width) | ((v % period) < width)
    else:
        mask = np.hypot((u % period) - period / 2, (v % period) - period / 2) < period * rng.uniform(0.15, 0.45)
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray(np.where(mask[..., None], a, b).astype(np.uint8))


def shapes(rng):
    """Flat-coloured ellipses, rectangles, polygons and lines on a plain background: clip art, diagrams."""
    side = _side(rng)
    img = Image.new("RGB", (side, side), _colour(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 9))):
        box = np.sort(rng.integers(0, side, (2, 2)), axis=0).ravel().tolist()
        box = [box[0], box[1], max(box[2], box[0] + 2), max(box[3], box[1] + 2)]
        kind = rng.integers(4)
        if kind == 0:
            draw.ellipse(box, fill=_colour(rng))
        elif kind == 1:
            draw.rectangle(box, fill=_colour(rng))
        elif kind == 2:
            draw.polygon([tuple(p) for p in rng.integers(0, side, (int(rng.integers(3, 7)), 2)).tolist()],
                         fill=_colour(rng))
        else:
            draw.line(box, fill=_colour(rng), width=int(rng.integers(1, max(2, side // 10))))
    return img


def _font(size):
    return ImageFont.load_default(size=int(size))


def text(rng):
    """Lines of rendered words, as in a scan, a sign or a document crop."""
    side = _side(rng)
    dark = rng.random() < 0.7
    background = tuple(int(v) for v in rng.integers(200, 256, 3)) if dark else tuple(int(v) for v in rng.integers(0, 70, 3))
    ink = tuple(int(v) for v in rng.integers(0, 80, 3)) if dark else tuple(int(v) for v in rng.integers(180, 256, 3))
    img = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    size = rng.uniform(side / 10, side / 2.5)
    y = rng.uniform(-size / 2, size)
    while y < side:
        line = " ".join(rng.choice(WORDS, int(rng.integers(1, 5))))
        draw.text((rng.uniform(-size, side / 4), y), line, fill=ink, font=_font(size))
        y += size * rng.uniform(1.1, 1.8)
    return img


def strokes(rng):
    """One to three thick pen curves on a plain ground: handwritten digits and letters, doodles."""
    side = _side(rng)
    light_ground = rng.random() < 0.5
    img = Image.new("L", (side, side), 255 if light_ground else 0)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        points = rng.uniform(0.15, 0.85, (4, 2)) * side
        t = np.linspace(0, 1, 40)[:, None]
        curve = ((1 - t) ** 3 * points[0] + 3 * (1 - t) ** 2 * t * points[1] + 3 * (1 - t) * t ** 2 * points[2]
                 + t ** 3 * points[3])
        draw.line([tuple(p) for p in curve.tolist()], fill=0 if light_ground else 255,
                  width=int(max(1, side * rng.uniform(0.04, 0.14))), joint="curve")
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, side / 40)))
    return img.convert("RGB")


def fractal(rng):
    """1/f^beta noise, grey or coloured: clouds, marble, bark, fabric-like textures."""
    side = _side(rng)
    fy, fx = np.meshgrid(np.fft.fftfreq(side), np.fft.fftfreq(side), indexing="ij")
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    beta = rng.uniform(1.0, 3.5)
    channels = []
    for _ in range(3 if rng.random() < 0.6 else 1):
        spectrum = (rng.normal(size=(side, side)) + 1j * rng.normal(size=(side, side))) / radius ** (beta / 2)
        field = np.real(np.fft.ifft2(spectrum))
        channels.append((field - field.min()) / max(np.ptp(field), 1e-9))
    arr = np.stack(channels * (3 // len(channels)), axis=-1)
    if rng.random() < 0.5:  # a palette between two colours instead of raw channels
        a, b = np.array(_colour(rng)), np.array(_colour(rng))
        arr = a + (b - a) * arr[..., :1]
    else:
        arr = arr * 255
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def screen(rng):
    """A user-interface screenshot: a window bar, panels, buttons and lines of text on a light or dark theme."""
    side = _side(rng) * 2
    dark = rng.random() < 0.3
    base = int(rng.integers(20, 50)) if dark else int(rng.integers(225, 256))
    img = Image.new("RGB", (side, side), (base, base, base))
    draw = ImageDraw.Draw(img)
    bar = int(side * rng.uniform(0.05, 0.15))
    draw.rectangle([0, 0, side, bar], fill=_colour(rng))
    ink = (230, 230, 230) if dark else (30, 30, 30)
    size = max(6, side / rng.uniform(12, 30))
    y = bar + size / 2
    while y < side:
        if rng.random() < 0.25:
            x0 = rng.uniform(0, side / 2)
            draw.rounded_rectangle([x0, y, x0 + rng.uniform(side / 8, side / 3), y + size * 1.4], radius=3,
                                   fill=_colour(rng))
        else:
            draw.text((rng.uniform(2, side / 6), y), " ".join(rng.choice(WORDS, int(rng.integers(1, 7)))),
                      fill=ink, font=_font(size))
        y += size * rng.uniform(1.4, 2.2)
    return img


FAMILIES = {"noise": noise, "flat": flat, "gradient": gradient, "pattern": pattern, "shapes": shapes, "text": text,
            "strokes": strokes, "fractal": fractal, "screen": screen}


def generate(family, count, seed, size=INPUT_SIZE):
    """(count, size, size, 3) uint8 images of one family; the same (family, count, seed) gives the same images."""
    make = FAMILIES[family]
    family_seed = list(FAMILIES).index(family)
    return np.stack([to_model_input(make(np.random.default_rng([seed, family_seed, i])).convert("RGB"), size)
                     for i in range(count)])


@functools.lru_cache(maxsize=4)  # every evaluation in a process draws the same held-out set (FIT_SEED): drawn once
def mixed(count, seed, size=INPUT_SIZE, families=tuple(FAMILIES)):
    """count images drawn evenly from the families (every one by default; family-major order); read-only."""
    per = -(-count // len(families))
    images = np.concatenate([generate(name, per, seed, size) for name in families])[:count]
    images.setflags(write=False)
    return images
