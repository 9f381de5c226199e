"""Common corruptions of uint8 images at CIFAR-10-C's severity-1 parameters (Hendrycks & Dietterich 2019).

A subset of the benchmark's 15: the ones a few lines of numpy and Pillow reproduce faithfully. Each is a pure
function of (images (N, H, W, 3) uint8, rng) -> uint8 images.
"""
import io

import numpy as np
from PIL import Image, ImageFilter


def _clip(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_noise(x, rng, c=0.04):
    return _clip((x / 255 + rng.normal(0, c, x.shape)) * 255)


def shot_noise(x, rng, c=500):
    return _clip(rng.poisson(x / 255 * c) / c * 255)


def impulse_noise(x, rng, c=0.01):
    out = x.copy()
    hit = rng.random(x.shape) < c
    out[hit] = np.where(rng.random(hit.sum()) < 0.5, 0, 255)
    return out


def _per_image(x, fn):
    return np.stack([np.asarray(fn(Image.fromarray(img)).convert("RGB")) for img in x])


def gaussian_blur(x, rng, sigma=0.4):
    return _per_image(x, lambda img: img.filter(ImageFilter.GaussianBlur(sigma)))


def brightness(x, rng, c=0.05):
    """HSV value + c with hue and saturation kept: every channel scales by V'/V (grey when V = 0)."""
    rgb = x / 255
    value = rgb.max(axis=-1, keepdims=True)
    raised = np.clip(value + c, 0, 1)
    return _clip(np.where(value > 0, rgb * raised / np.maximum(value, 1e-12), raised) * 255)


def contrast(x, rng, c=0.75):
    means = x.mean(axis=(1, 2, 3), keepdims=True)
    return _clip((x - means) * c + means)


def pixelate(x, rng, c=0.95):
    side = x.shape[1]
    small = int(side * c)
    return _per_image(x, lambda img: img.resize((small, small), Image.Resampling.BOX).resize((side, side),
                                                                                             Image.Resampling.BOX))


def jpeg(x, rng, quality=80):
    def once(img):
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))
    return _per_image(x, once)


MILD = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
        "gaussian_blur": gaussian_blur, "brightness": brightness, "contrast": contrast, "pixelate": pixelate,
        "jpeg": jpeg}


def corrupt(name, images, seed=0):
    """images with one corruption at severity 1; deterministic by seed."""
    return MILD[name](np.asarray(images, np.uint8), np.random.default_rng([seed, list(MILD).index(name)]))
