"""AugMix (Hendrycks et al. 2020): each image replaced by a random convex mix of itself and chains of basic operations.

The operations are AugMix's own CIFAR set, which leaves out what CIFAR-10-C corrupts (no noise, blur, brightness,
contrast, colour or JPEG), so robustness measured by benchmarks/bench_robustness.py is not trained on. A pure function
of (uint8 image, numpy Generator): the same seed gives the same mixes.
"""
import numpy as np
from PIL import Image, ImageOps

WIDTH = 3          # chains mixed per image
MAX_DEPTH = 3      # operations per chain: 1 to this many, drawn per chain
ALPHA = 1.0        # Dirichlet (chain weights) and Beta (image vs mix) concentration


def _level(severity, rng, top):
    """A random strength up to `top` at severity 1..10 (AugMix's sample_level, then float_parameter)."""
    return rng.uniform(0.1, severity) / 10 * top


def autocontrast(img, severity, rng):
    return ImageOps.autocontrast(img)


def equalize(img, severity, rng):
    return ImageOps.equalize(img)


def posterize(img, severity, rng):
    return ImageOps.posterize(img, 4 - int(_level(severity, rng, 4) * 0.999))


def solarize(img, severity, rng):
    return ImageOps.solarize(img, 256 - int(_level(severity, rng, 256)))


def rotate(img, severity, rng):
    return img.rotate(_level(severity, rng, 30) * rng.choice([-1, 1]), resample=Image.Resampling.BILINEAR)


def _affine(img, matrix):
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR)


def shear_x(img, severity, rng):
    return _affine(img, (1, _level(severity, rng, 0.3) * rng.choice([-1, 1]), 0, 0, 1, 0))


def shear_y(img, severity, rng):
    return _affine(img, (1, 0, 0, _level(severity, rng, 0.3) * rng.choice([-1, 1]), 1, 0))


def translate_x(img, severity, rng):
    return _affine(img, (1, 0, _level(severity, rng, img.size[0] / 3) * rng.choice([-1, 1]), 0, 1, 0))


def translate_y(img, severity, rng):
    return _affine(img, (1, 0, 0, 0, 1, _level(severity, rng, img.size[1] / 3) * rng.choice([-1, 1])))


OPERATIONS = (autocontrast, equalize, posterize, solarize, rotate, shear_x, shear_y, translate_x, translate_y)


def augmix(image, rng, severity=3):
    """One uint8 (H, W, 3) image mixed with WIDTH chains of operations: (1 - m) x image + m x sum(w_i x chain_i)."""
    weights = rng.dirichlet([ALPHA] * WIDTH)
    m = rng.beta(ALPHA, ALPHA)
    source = Image.fromarray(image)
    mix = np.zeros(image.shape, np.float64)
    for weight in weights:
        img = source
        for _ in range(rng.integers(1, MAX_DEPTH + 1)):
            img = OPERATIONS[rng.integers(len(OPERATIONS))](img, severity, rng)
        mix += weight * np.asarray(img, np.float64)
    return np.clip(np.rint((1 - m) * image + m * mix), 0, 255).astype(np.uint8)


def augmix_some(x, share, rng, severity=3):
    """A copy of the images x with a `share` of them, drawn at random, replaced by their AugMix."""
    out = x.copy()
    for i in np.flatnonzero(rng.random(len(x)) < share):
        out[i] = augmix(x[i], rng, severity)
    return out
