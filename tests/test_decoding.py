import io

import numpy as np
import pytest
from PIL import Image

from cifarlab.web import decoding
from cifarlab.web.uploads import status_of
from tests.helpers import image_bytes

BUDGET = decoding.Budget(max_image_pixels=10**6, max_request_pixels=10**6, deadline_s=10.0)
BIG = decoding.Budget(max_image_pixels=30_000_000, max_request_pixels=30_000_000, deadline_s=10.0)


@pytest.fixture(scope="module")
def decoders():
    """One pool of two decoder processes for the module's tests."""
    pool = decoding.DecoderPool(2, 256 * 2**20)
    yield pool
    pool.close()


@pytest.fixture(params=["here", "decoders"])
def pool(request):
    """Each decode test runs in the web process and in decoder processes: the answers must not differ."""
    return request.getfixturevalue("decoders") if request.param == "decoders" else None


@pytest.fixture(scope="module")
def huge_png():
    """A 5000 x 5000 PNG of 75 MB decoded, but a few kB on the wire: slow and memory-hungry to decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 5000), (90, 120, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def live_pids(pool):
    return {decoder.process.pid for decoder in pool._live}


def test_each_file_is_decoded_or_refused_on_its_own(pool):
    items = decoding.decode_items([("a.png", image_bytes()), ("b.txt", b"hello"), ("c.png", b"")], 32, BUDGET,
                                  pool=pool)
    assert [i.filename for i in items] == ["a.png", "b.txt", "c.png"]
    assert items[0].error is None and items[0].pixels.shape == (32, 32, 3) and items[0].pixels.dtype == np.uint8
    assert [status_of(i.error) for i in items[1:]] == [415, 400]
    assert np.array_equal(items[0].pixels, decoding.decode_items([("a.png", image_bytes())], 32, BUDGET)[0].pixels)


def test_a_request_over_its_pixel_budget_is_refused_before_decoding(pool):
    big = image_bytes(size=(800, 800))
    with pytest.raises(decoding.OverBudget) as exc:
        decoding.decode_items([("a.png", big), ("b.png", big)], 32, BUDGET, pool=pool)
    assert status_of(exc.value) == 413 and "1,280,000 pixel decodes" in exc.value.message


def test_images_past_the_deadline_are_refused_with_503(pool):
    items = decoding.decode_items([("a.png", image_bytes())], 32, BUDGET, started=-1e9, pool=pool)
    assert status_of(items[0].error) == 503 and "limit" in items[0].error.message


def test_a_decoder_past_the_deadline_is_killed_and_replaced(decoders, huge_png):
    decoding.decode_items([("warm.png", image_bytes())], 32, BUDGET, pool=decoders)
    before = live_pids(decoders)
    quick = decoding.Budget(BIG.max_image_pixels, BIG.max_request_pixels, deadline_s=0.05)
    items = decoding.decode_items([("huge.png", huge_png), ("next.png", image_bytes())], 32, quick, pool=decoders)
    assert [status_of(i.error) for i in items] == [503, 503] and "0.05 s limit" in items[0].error.message
    assert len(before - live_pids(decoders)) == 1  # the busy decoder was killed, not waited for
    assert decoding.decode_items([("after.png", image_bytes())], 32, BUDGET, pool=decoders)[0].error is None


def test_an_image_past_the_decoder_memory_limit_is_refused_and_the_pool_goes_on(huge_png):
    small = decoding.DecoderPool(1, 40 * 2**20)
    try:
        items = decoding.decode_items([("huge.png", huge_png), ("cat.png", image_bytes())], 32, BIG, pool=small)
        assert status_of(items[0].error) == 413 and "memory" in items[0].error.message
        assert items[1].error is None and items[1].pixels.shape == (32, 32, 3)
    finally:
        small.close()


def test_the_same_image_decodes_in_the_web_process_within_its_budget(huge_png):
    assert decoding.decode_items([("huge.png", huge_png)], 32, BIG)[0].pixels.shape == (32, 32, 3)


@pytest.mark.parametrize("raw, clean", [("cat.png", "cat.png"), ("a\x00b\nc.png", "abc.png"), ("", "upload"),
                                        (None, "upload"), ("x" * 500, "x" * 200)])
def test_client_file_names_are_made_safe_to_show(raw, clean):
    assert decoding.clean_filename(raw) == clean


def test_each_image_is_freed_once_decoded_so_a_request_needs_the_memory_of_one(huge_png):
    bilevel = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bilevel, format="PNG")  # 25 MB decoded (as L), 3 kB sent
    small = decoding.DecoderPool(1, 200 * 2**20)
    try:
        items = decoding.decode_items([(f"{i}.png", bilevel.getvalue()) for i in range(16)], 32,
                                      decoding.Budget(25_000_000, 10**9, 60.0), pool=small)
        assert [i.error for i in items] == [None] * 16
    finally:
        small.close()
