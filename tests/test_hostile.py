"""Hostile uploads against the form and the JSON API: always a clear 4xx or a result, never a 5xx."""
import io
import logging
import os
import re
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.helpers import image_bytes


def png_declaring(width, height):
    """A tiny PNG whose header claims width x height (the pixel data is for 1x1)."""
    data = bytearray(image_bytes("PNG", size=(1, 1)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def send(client, target, data, filename):
    return client.post("/" if target == "form" else "/api/predict",
                       data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data")


HOSTILE = [
    pytest.param(b"", "empty.png", 400, id="zero-bytes"),
    pytest.param(os.urandom(2048), "random.png", 415, id="random-bytes"),
    pytest.param(b"<script>alert(document.cookie)</script>", "x.png", 415, id="js-as-png"),
    pytest.param(b"GIF89a/*" + b"\0" * 20 + b"*/=alert(1);", "gifar.gif", 415, id="gif-js-polyglot"),
    pytest.param(b"%PDF-1.7\n" + image_bytes("JPEG"), "pdf.jpg", 415, id="pdf-jpeg-polyglot"),
    pytest.param(png_declaring(100_000, 100_000), "bomb.png", 413, id="huge-declared-dimensions"),
    pytest.param(image_bytes("PNG")[:1500], "cut.png", 400, id="truncated"),
    pytest.param(b"\xff\xd8\xff\xe0" + b"\0" * 100, "head.jpg", 415, id="jpeg-header-only"),
]
FINE = [
    pytest.param(image_bytes("PNG", size=(1, 1)), "one.png", id="1x1"),
    pytest.param(image_bytes("PNG", "L", size=(10000, 10)), "wide.png", id="10000x10"),
    pytest.param(image_bytes("PNG") + b"<html>trailing</html>", "trailer.png", id="png-with-html-trailer"),
    pytest.param(image_bytes("PNG"), "猫の写真 😺.png", id="unicode-name"),
    pytest.param(image_bytes("PNG"), "a" * 5000 + ".png", id="very-long-name"),
    pytest.param(image_bytes("PNG"), "../../etc/passwd", id="traversal-name"),
    pytest.param(image_bytes("PNG"), "/tmp/absolute.png", id="absolute-name"),
]


@pytest.mark.parametrize("target", ["form", "api"])
@pytest.mark.parametrize("data,filename,status", HOSTILE)
def test_hostile_upload_gets_a_clear_4xx(client, app, target, data, filename, status):
    response = send(client, target, data, filename)
    assert response.status_code == status
    text = response.get_data(as_text=True)
    if target == "api":
        assert response.is_json and response.get_json()["error"]
    else:
        assert 'role="alert"' in text and "Traceback" not in text
    assert os.listdir(app.config["UPLOAD_FOLDER"]) == []
    assert client.get("/healthz").status_code == 200  # still serving


@pytest.mark.parametrize("target", ["form", "api"])
@pytest.mark.parametrize("data,filename", FINE)
def test_odd_but_valid_uploads_are_classified_and_stored_safely(client, app, target, data, filename):
    response = send(client, target, data, filename)
    assert response.status_code == 200
    stored = os.listdir(app.config["UPLOAD_FOLDER"])
    assert all(re.fullmatch(r"[0-9a-f]{32}(_input)?\.png", name) for name in stored)
    if target == "form":
        assert len(stored) == 2 and b'class="class-name"' in response.data
    else:
        assert response.get_json()["predictions"][0]["filename"] == filename[:200]


def test_request_log_has_method_path_status_latency_and_no_bytes(client, caplog):
    caplog.set_level(logging.INFO, logger="cifarlab.app")
    secret = b"SECRET-PAYLOAD-" + os.urandom(8).hex().encode()
    send(client, "form", secret, "x.png")
    lines = [r.getMessage() for r in caplog.records if r.name == "cifarlab.app"]
    assert any(line.startswith("POST / 415 ") and line.endswith("ms") for line in lines)
    assert secret.decode() not in caplog.text


def mutate(data, flips, cut):
    """Flip bytes at the given positions and optionally cut the tail."""
    out = bytearray(data)
    for position, value in flips:
        out[position % len(out)] = value
    return bytes(out[:max(1, len(out) - cut)])


SEEDS = [image_bytes(fmt, size=(24, 16)) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), target=st.sampled_from(["form", "api"]))
def test_random_bytes_never_give_5xx(client, data, target):
    assert send(client, target, data, "fuzz.png").status_code < 500


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), target=st.sampled_from(["form", "api"]),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       cut=st.integers(0, 200))
def test_mutated_images_never_give_5xx(client, seed, target, flips, cut):
    response = send(client, target, mutate(seed, flips, cut), "mutant.png")
    assert response.status_code < 500
    assert response.status_code in (200, 400, 413, 415, 422)
