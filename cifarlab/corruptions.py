"""CIFAR-10-C's common corruptions (Hendrycks & Dietterich 2019) with its CIFAR parameters, severities 1 to 5.

Each corruption follows the paper's own CIFAR code (make_cifar_c.py): its parameter table, its order of operations,
SciPy's ndimage for its filters, zooms and remapping. Three differ where that code calls tools this repo does not ship:
motion blur (and snow's streaks) follows ImageMagick's one-sided Gaussian line kernel; frost blends a procedural ice
texture instead of the paper's six frost photographs; spatter's water edges use Sobel gradients instead of OpenCV's
Canny. BENCHMARK holds the 15 benchmark corruptions, HELD_OUT the 4 extra ones the paper keeps for validation.
Every function maps (uint8 images (N, 32, 32, 3), severity 1..5, numpy Generator) -> uint8 images.
"""
import io

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

SEVERITIES = (1, 2, 3, 4, 5)


def _unit(x):
    return np.asarray(x, np.float64) / 255


def _uint8(x):
    """Pixels in 0..1 back to uint8, clipped and rounded."""
    return np.clip(np.rint(np.clip(x, 0, 1) * 255), 0, 255).astype(np.uint8)


def _per_image(x, fn):
    return np.stack([fn(img) for img in x])


def _gaussian(img, sigma, mode="nearest", truncate=4.0):
    """skimage.filters.gaussian of one image: every channel alone (spatial axes only)."""
    sigmas = (sigma, sigma, 0) if img.ndim == 3 else sigma
    return ndimage.gaussian_filter(img, sigmas, mode=mode, truncate=truncate)


def gaussian_noise(x, severity, rng):
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return _uint8(_unit(x) + rng.normal(0, c, x.shape))


def shot_noise(x, severity, rng):
    c = [500, 250, 100, 75, 50][severity - 1]
    return _uint8(rng.poisson(_unit(x) * c) / c)


def impulse_noise(x, severity, rng):
    """Salt and pepper on a fraction c of the values (skimage's s&p: half salt, half pepper)."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    out = _unit(x)
    hit = rng.random(x.shape) < c
    out[hit] = rng.random(int(hit.sum())) < 0.5
    return _uint8(out)


def speckle_noise(x, severity, rng):
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    u = _unit(x)
    return _uint8(u + u * rng.normal(0, c, x.shape))


def gaussian_blur(x, severity, rng):
    c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    return _per_image(_unit(x), lambda img: _uint8(_gaussian(img, c)))


def glass_blur(x, severity, rng):
    """Blur, swap each pixel with a neighbour (iterations times, bottom-right to top-left), blur again."""
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    side = x.shape[1]

    def one(img):
        out = _uint8(_gaussian(img, sigma))
        for _ in range(iterations):
            steps = rng.integers(-delta, delta, (side - 2 * delta, side - 2 * delta, 2))  # numpy's randint: high excluded
            for i, h in enumerate(range(side - delta, delta, -1)):
                for j, w in enumerate(range(side - delta, delta, -1)):
                    dx, dy = steps[i, j]
                    out[[h, h + dy], [w, w + dx]] = out[[h + dy, h], [w + dx, w]]
        return _uint8(_gaussian(out / 255, sigma))
    return _per_image(_unit(x), one)


def _disk(radius, alias_blur):
    """The paper's anti-aliased disk kernel (17 x 17 for radii up to 8)."""
    span = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = 3 if radius <= 8 else 5
    xx, yy = np.meshgrid(span, span)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    taps = np.arange(ksize) - ksize // 2  # cv2.GaussianBlur(ksize, sigmaX), reflect-101 borders
    weights = np.exp(-taps ** 2 / (2 * alias_blur ** 2))
    weights /= weights.sum()
    return ndimage.correlate1d(ndimage.correlate1d(disk, weights, 0, mode="mirror"), weights, 1, mode="mirror")


def defocus_blur(x, severity, rng):
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = _disk(radius, alias)
    return _per_image(_unit(x), lambda img: _uint8(np.stack(
        [ndimage.correlate(img[..., ch], kernel, mode="mirror") for ch in range(img.shape[-1])], axis=-1)))


def _motion_kernel_blur(img, radius, sigma, angle):
    """ImageMagick's motion blur: a one-sided Gaussian-weighted line of 2 x radius + 1 taps along `angle` degrees,
    integer offsets, edge pixels repeated."""
    width = 2 * int(np.ceil(radius)) + 1
    weights = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    px, py = width * np.sin(np.radians(angle)), width * np.cos(np.radians(angle))
    norm = np.hypot(px, py)
    h, w = img.shape[:2]
    padded = np.pad(img, ((width, width), (width, width)) + ((0, 0),) * (img.ndim - 2), mode="edge")
    out = np.zeros_like(img, dtype=np.float64)
    for i, weight in enumerate(weights):
        ox, oy = int(np.ceil(i * py / norm - 0.5)), int(np.ceil(i * px / norm - 0.5))
        out += weight * padded[width + oy:width + oy + h, width + ox:width + ox + w]
    return out


def motion_blur(x, severity, rng):
    radius, sigma = [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)][severity - 1]
    return _per_image(_unit(x), lambda img: _uint8(_motion_kernel_blur(img, radius, sigma, rng.uniform(-45, 45))))


def _clipped_zoom(img, factor):
    """Zoom into the centre by `factor` (bilinear), cropped back to the image's size."""
    h = img.shape[0]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    zoomed = ndimage.zoom(img[top:top + crop, top:top + crop], (factor, factor) + (1,) * (img.ndim - 2), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


def zoom_blur(x, severity, rng):
    top = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    factors = np.arange(1, top, 0.01)

    def one(img):
        return _uint8((img + sum(_clipped_zoom(img, f) for f in factors)) / (len(factors) + 1))
    return _per_image(_unit(x).astype(np.float32), one)


def snow(x, severity, rng):
    loc, scale, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]

    def one(img):
        flakes = _clipped_zoom(rng.normal(loc, scale, img.shape[:2]), zoom)
        flakes[flakes < threshold] = 0
        flakes = np.rint(np.clip(flakes, 0, 1) * 255) / 255  # the paper blurs an 8-bit image of the flakes
        flakes = np.rint(_motion_kernel_blur(flakes, radius, sigma, rng.uniform(-135, -45)) * 255)[..., None] / 255
        grey = (img @ np.array([0.299, 0.587, 0.114]))[..., None]
        img = blend * img + (1 - blend) * np.maximum(img, grey * 1.5 + 0.5)
        return _uint8(img + flakes + np.rot90(flakes, 2))
    return _per_image(_unit(x), one)


def _frost_texture(rng, side=96):
    """A procedural ice texture standing in for the paper's frost photographs: pale blue-grey with bright crystals."""
    base = _gaussian(rng.normal(0, 1, (side, side)), 6, mode="wrap")
    base = (base - base.min()) / max(np.ptp(base), 1e-9)
    crystals = np.zeros((side, side))
    for _ in range(int(side * 1.5)):
        y, x = rng.uniform(0, side, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(3, side / 4)
        t = np.linspace(0, length, int(length * 2))
        crystals[(y + t * np.sin(angle)).astype(int) % side, (x + t * np.cos(angle)).astype(int) % side] += rng.uniform(0.3, 1)
    crystals = np.clip(_gaussian(crystals, 0.7, mode="wrap") * 2.5, 0, 1)
    grey = 0.35 + 0.35 * base + 0.4 * crystals
    return np.clip(np.stack([grey * 0.86, grey * 0.93, grey * 1.0], axis=-1), 0, 1) * 255


def frost(x, severity, rng):
    weight, frost_weight = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    texture = _frost_texture(rng)
    side = x.shape[1]

    def one(img):
        top, left = rng.integers(0, texture.shape[0] - side, 2)
        return np.clip(weight * img + frost_weight * texture[top:top + side, left:left + side], 0, 255).astype(np.uint8)
    return _per_image(np.asarray(x, np.float64), one)


def _plasma_fractal(rng, size=32, decay=3.0):
    """The paper's diamond-square height map in 0..1 (its wibble, noise times wibble, kept as written)."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled_mean(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)
    while step >= 2:
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        grid[step // 2:size:step, step // 2:size:step] = wibbled_mean(square)
        centres = grid[step // 2:size:step, step // 2:size:step]
        corners = grid[0:size:step, 0:size:step]
        grid[0:size:step, step // 2:size:step] = wibbled_mean(centres + np.roll(centres, 1, axis=0)
                                                              + corners + np.roll(corners, -1, axis=1))
        grid[step // 2:size:step, 0:size:step] = wibbled_mean(centres + np.roll(centres, 1, axis=1)
                                                              + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def fog(x, severity, rng):
    amount, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]

    def one(img):
        peak = img.max()
        side = img.shape[0]
        img = img + amount * _plasma_fractal(rng, 32, decay)[:side, :side, None]
        return _uint8(img * peak / (peak + amount))
    return _per_image(_unit(x), one)


def brightness(x, severity, rng):
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    hsv = rgb_to_hsv(_unit(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _uint8(hsv_to_rgb(hsv))


def saturate(x, severity, rng):
    scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    hsv = rgb_to_hsv(_unit(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return _uint8(hsv_to_rgb(hsv))


def contrast(x, severity, rng):
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    u = _unit(x)
    means = u.mean(axis=(1, 2), keepdims=True)  # each image's channel means
    return _uint8((u - means) * c + means)


def _affine_warp(img, rng, jitter):
    """The paper's random affine: three points around the centre moved by up to `jitter` pixels, reflect-101 borders."""
    side = img.shape[0]
    centre, square = side // 2, side // 3
    src = np.array([[centre + square, centre + square], [centre + square, centre - square],
                    [centre - square, centre - square]], np.float64)  # (x, y), as cv2.getAffineTransform takes them
    dst = src + rng.uniform(-jitter, jitter, src.shape)
    forward = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # dst = forward @ [x, y, 1]
    inverse = np.linalg.inv(np.r_[forward, [[0, 0, 1]]])[:2]  # output (x, y) -> input (x, y)
    swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, column)
    matrix, offset = swap @ inverse[:, :2] @ swap, swap @ inverse[:, 2]
    return np.stack([ndimage.affine_transform(img[..., ch], matrix, offset, order=1, mode="mirror")
                     for ch in range(img.shape[-1])], axis=-1)


def elastic_transform(x, severity, rng):
    side = x.shape[1]
    alpha, sigma, jitter = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                            (0.1, 0.03, 0.03)][severity - 1]
    alpha, sigma, jitter = alpha * side, sigma * side, jitter * side

    def one(img):
        img = _affine_warp(img.astype(np.float32), rng, jitter)
        dx = _gaussian(rng.uniform(-1, 1, img.shape[:2]), sigma, mode="reflect", truncate=3) * alpha
        dy = _gaussian(rng.uniform(-1, 1, img.shape[:2]), sigma, mode="reflect", truncate=3) * alpha
        rows, cols = np.meshgrid(np.arange(img.shape[0]), np.arange(img.shape[1]), indexing="ij")
        return _uint8(np.stack([ndimage.map_coordinates(img[..., ch], [rows + dy, cols + dx], order=1, mode="reflect")
                                for ch in range(img.shape[-1])], axis=-1))
    return _per_image(_unit(x), one)


def pixelate(x, severity, rng):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    side = x.shape[1]
    small = int(side * c)
    return _per_image(x, lambda img: np.asarray(Image.fromarray(img).resize((small, small), Image.Resampling.BOX)
                                                .resize((side, side), Image.Resampling.BOX)))


def jpeg_compression(x, severity, rng):
    quality = [80, 65, 58, 50, 40][severity - 1]

    def one(img):
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return _per_image(x, one)


def _water_edges(liquid):
    """The paper's edge map of the liquid layer (Canny there, Sobel here), as distance-weighted emboss."""
    layer = (liquid * 255).astype(np.uint8).astype(np.float64)
    gradient = np.hypot(ndimage.sobel(layer, 0), ndimage.sobel(layer, 1))
    edges = gradient > 150
    dist = np.minimum(ndimage.distance_transform_edt(~edges) if edges.any() else np.full(layer.shape, 20.0), 20)
    dist = ndimage.uniform_filter(dist, 3, mode="mirror").astype(np.uint8)
    values, counts = np.unique(dist, return_counts=True)  # histogram equalisation, as cv2.equalizeHist
    cdf = np.cumsum(counts)
    lookup = np.rint((cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1) * 255)
    dist = lookup[np.searchsorted(values, dist)]
    emboss = ndimage.correlate(dist, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float64), mode="mirror")
    return ndimage.uniform_filter(np.clip(emboss, 0, 255), 3, mode="mirror")


def spatter(x, severity, rng):
    loc, scale, sigma, threshold, intensity, mud = [
        (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)][severity - 1]

    def one(img):
        liquid = _gaussian(rng.normal(loc, scale, img.shape[:2]), sigma)
        liquid[liquid < threshold] = 0
        if not mud:  # pale turquoise water
            m = liquid * _water_edges(liquid)
            m = m / max(m.max(), 1e-9) * intensity
            return _uint8(img + m[..., None] * np.array([175, 238, 238]) / 255)
        m = _gaussian((liquid > threshold).astype(np.float64), intensity)
        m[m < 0.8] = 0
        return _uint8(img * (1 - m[..., None]) + m[..., None] * np.array([63, 42, 20]) / 255)  # brown mud
    return _per_image(_unit(x), one)


BENCHMARK = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness, "contrast": contrast,
    "elastic_transform": elastic_transform, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
}
HELD_OUT = {"speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur, "spatter": spatter, "saturate": saturate}
ALL = {**BENCHMARK, **HELD_OUT}
# severity 1 of these: the out-of-distribution benchmark's mild corruptions, which should stay "known" where right
MILD = ("gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "brightness", "contrast", "pixelate",
        "jpeg_compression")


def corrupt(name, images, severity=1, seed=0):
    """images with one corruption at one severity; the same (name, severity, seed) gives the same images."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity is 1 to 5, not {severity}")
    rng = np.random.default_rng([seed, list(ALL).index(name), severity])
    return ALL[name](np.asarray(images, np.uint8), severity, rng)
