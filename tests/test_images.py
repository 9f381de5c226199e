import io

import numpy as np
import pytest
from PIL import Image

from cifarlab.images import ImageError, decode_image, preprocess_bytes, to_model_input
from tests.helpers import image_bytes


def encode(img, fmt="PNG", **kw):
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "1", "CMYK", "I;16", "I"])
def test_every_mode_becomes_uint8_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode in ("I",) else "PNG")
    pixels = preprocess_bytes(image_bytes(fmt, mode, size=(40, 30)))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8


def test_sixteen_bit_grey_keeps_its_brightness():
    img = Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16))
    assert img.mode.startswith("I;16")
    pixels = preprocess_bytes(encode(img))
    assert abs(int(pixels[0, 0, 0]) - 127) <= 1


def test_transparency_goes_on_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert tuple(preprocess_bytes(encode(img))[5, 5]) == (255, 255, 255)
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert tuple(preprocess_bytes(encode(palette))[5, 5]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (20, 40)
    arr = np.asarray(decoded)
    assert arr[5, 10].mean() > 200 and arr[35, 10].mean() < 50  # white half is now on top


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = preprocess_bytes(buffer.getvalue())[8, 8]
    assert r > 200 and b < 50


def test_resize_is_antialiased():
    stripes = np.zeros((320, 320, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes average to grey, not to black or white
    small = to_model_input(Image.fromarray(stripes))
    assert 100 < small.mean() < 155 and small.std() < 20


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"), (b"GIF89a", "unsupported"), (image_bytes("GIF", "P")[:40], "unsupported"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "unsupported"), (image_bytes("PNG", size=(64, 64))[:200], "damaged"),
    (image_bytes("WEBP", size=(64, 64))[:100], "damaged"), (b"%PDF-1.4 fake", "unsupported"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "unsupported"),
])
def test_bad_bytes_raise_image_error_saying_why(data, reason):
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.reason == reason


def test_declared_huge_dimensions_are_refused_before_decoding():
    data = image_bytes("PNG", "L", size=(10000, 10))
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels=50_000)
    assert info.value.reason == "too_large"
    assert decode_image(data).size == (10000, 10)  # allowed under the default limit
