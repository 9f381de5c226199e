"""Image decoding and the one preprocessing function shared by training, the app and the notebook."""
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

INPUT_SIZE = 32  # pixels per side of the model input
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # never EPS/PDF/SVG/ICO etc.
DEFAULT_MAX_PIXELS = 25_000_000  # width x height; Pillow's own bomb limit is 89 M
BACKGROUND = (255, 255, 255)  # transparent areas are composited onto white


class ImageError(ValueError):
    """An upload that cannot be used as an image; carries the HTTP status to answer with."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


def decode_image(data, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode bytes into a fully loaded RGB PIL image, orientation applied, or raise ImageError."""
    if not data:
        raise ImageError("The file is empty.", 400)
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels.", 413
                )
            img.load()  # decodes the first frame completely: truncated data fails here
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError("The image declares too many pixels to decode safely.", 413) from None
    except UnidentifiedImageError:
        raise ImageError(
            "This is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF).", 415
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
            ZeroDivisionError, MemoryError, RuntimeError) as exc:
        # Pillow's decoders raise a variety of errors on damaged files; all mean "bad upload".
        raise ImageError(f"The image could not be decoded (damaged or truncated file: {type(exc).__name__}).", 400) from None


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
