"""Image decoding and the one preprocessing function shared by training, the app and the notebook."""
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import containers
from .errors import CifarlabError

INPUT_SIZE = 32  # pixels per side of the model input
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # never EPS/PDF/SVG/ICO etc.
DEFAULT_MAX_PIXELS = 25_000_000  # width x height; Pillow's own bomb limit is 89 M
MAX_ASPECT = 1000  # longest side / shortest side: a 25,000,000 x 1 strip is no picture, and could never be reduced
WORKING_SIDE = 512  # pixels; larger images are reduced towards this while or right after decoding
BACKGROUND = (255, 255, 255)  # transparent areas are composited onto white
ORIENTATION = {  # EXIF orientation tag -> the transpose that makes the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Pillow's decoders raise a variety of errors on damaged files; all of them mean "bad upload".
DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                  MemoryError, RuntimeError, Image.DecompressionBombError)


REASONS = ("empty", "damaged", "unsupported", "malformed", "too_large", "shape", "memory")  # why an image is refused


class ImageError(CifarlabError, ValueError):
    """An upload that cannot be used as an image; `reason` (one of REASONS) says why, for the web layer to answer."""

    def __init__(self, message, reason="damaged"):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # pickled whole (reason too) when a decoder process sends it back
        return type(self), (self.message, self.reason)


def damaged(exc):
    """The ImageError for a file Pillow's decoder choked on (or ran out of memory on)."""
    if isinstance(exc, MemoryError):
        return ImageError("Decoding this image needs more memory than the decoder may use.", "memory")
    return ImageError(f"The image could not be decoded (damaged or truncated file: {type(exc).__name__}).", "damaged")


@dataclass
class Opened:
    """An image whose header was read (not yet decoded) and what decoding it will cost."""

    img: Image.Image
    passes: int  # decode passes: a progressive JPEG's scans, a GIF's frames

    @property
    def cost(self):
        """Pixel decodes: pixels x passes (at the JPEG draft scale)."""
        return self.img.size[0] * self.img.size[1] * self.passes

    def close(self):
        self.img.close()


def open_image(data, max_pixels=DEFAULT_MAX_PIXELS):
    """The Opened image, its JPEG draft scale set, or ImageError when it cannot be used: the one header pass that
    serves both the budget (Opened.cost) and the decode (decode_opened).

    The file's structure is walked first (containers.walk), so scan, chunk and block bombs are refused unparsed.
    """
    if not data:
        raise ImageError("The file is empty.", "empty")
    try:
        passes = containers.walk(data).passes
    except containers.StructureError as exc:
        raise ImageError(str(exc), "malformed") from None
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("This is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF).", "unsupported") from None
    except Image.DecompressionBombError:
        raise ImageError("The image declares too many pixels to decode safely.", "too_large") from None
    except DECODER_ERRORS as exc:
        raise damaged(exc) from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageError(f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.", "too_large")
    if max(width, height) > MAX_ASPECT * min(width, height):
        img.close()
        raise ImageError(f"The image is {width}x{height} pixels: more than {MAX_ASPECT} times longer than it is wide "
                         "is not a picture the model can use.", "shape")
    if img.format == "JPEG":
        try:
            img.draft(None, (WORKING_SIDE, WORKING_SIDE))  # the JPEG decoder scales by 1/2..1/8 for free
        except DECODER_ERRORS as exc:
            img.close()
            raise damaged(exc) from None
    return Opened(img, passes)


def decode_image(data, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode bytes into an upright 8-bit RGB PIL image of at most about 2 x WORKING_SIDE per side, or raise ImageError."""
    return decode_opened(open_image(data, max_pixels))


def decode_opened(opened):
    """Decode an Opened image into an upright 8-bit RGB PIL image, or raise ImageError.

    Only one full-size copy exists at a time: it is reduced in its own mode before conversion to RGB.
    """
    img = opened.img
    try:
        with img:
            orientation = img.getexif().get(0x0112)
            img.load()  # decodes the first frame completely: truncated data fails here
            small = _reduce(_reducible(img))
        small = _to_rgb(small)
        return small.transpose(ORIENTATION[orientation]) if orientation in ORIENTATION else small
    except DECODER_ERRORS as exc:
        raise damaged(exc) from None


def _reducible(img):
    """The image in a mode Image.reduce averages correctly (no palettes, bilevel or 16-bit modes)."""
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    return img


def _reduce(img):
    """Box-reduce by an integer factor so the longer side stays >= WORKING_SIDE and the shorter >= 3 x INPUT_SIZE."""
    factor = min(max(img.size) // WORKING_SIDE, min(img.size) // (3 * INPUT_SIZE))
    return img.reduce(factor) if factor >= 2 else img


def _to_rgb(img):
    """Convert any Pillow mode (16-bit, CMYK, palette, alpha) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 255.0 if img.mode == "F" else 65535.0
        if img.mode == "I" and arr.max(initial=0) <= 255:
            top = 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def to_model_input(img, size=INPUT_SIZE):
    """Resize an RGB PIL image to size x size with an anti-aliasing filter; uint8 array (size, size, 3)."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def preprocess_bytes(data, size=INPUT_SIZE, max_pixels=DEFAULT_MAX_PIXELS):
    """Bytes of any supported image -> uint8 array (size, size, 3) of raw 0..255 RGB pixels."""
    return to_model_input(decode_image(data, max_pixels), size)


def tta_view(images, mirror=False, dx=0, dy=0, xp=np):
    """One test-time view of a batch (N, H, W, C): optional horizontal mirror, then a reflect-padded shift by (dx, dy).

    xp is the array namespace: numpy when serving, keras.ops inside a Keras model, so both run this one definition.
    """
    if mirror:
        images = xp.flip(images, axis=2)
    if dx or dy:
        p = max(abs(dx), abs(dy))
        padded = xp.pad(images, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")
        h, w = images.shape[1], images.shape[2]
        images = padded[:, p + dy:p + dy + h, p + dx:p + dx + w, :]
    return images


def tta_rows(images, views):
    """Every view of every image, view-major: (len(views) * N, H, W, C); views are (mirror, dx, dy, ...) tuples."""
    return np.concatenate([tta_view(images, *view[:3]) for view in views])
