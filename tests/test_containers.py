"""Structure walks refuse scan, fill-byte, chunk and sub-block bombs before decoding, and pass ordinary files."""
import struct
import zlib

import pytest

from cifarlab import containers
from cifarlab.images import ImageError, decode_image, open_image
from tests.helpers import gif_with_tiny_comment_blocks, image_bytes, png_with_empty_chunks, progressive_jpeg


@pytest.mark.parametrize("data", [image_bytes("JPEG"), progressive_jpeg(), image_bytes("PNG"), image_bytes("GIF"),
                                  png_with_empty_chunks(10), gif_with_tiny_comment_blocks(10)],
                         ids=["jpeg", "progressive", "png", "gif", "png-some-chunks", "gif-some-blocks"])
def test_ordinary_files_pass_and_decode(data):
    containers.walk(data)
    assert decode_image(data).mode == "RGB"


def test_a_progressive_jpeg_counts_each_scan_as_a_pass():
    passes = containers.walk(progressive_jpeg()).passes
    assert 2 <= passes <= containers.MAX_JPEG_SCANS
    assert open_image(progressive_jpeg()).cost == 64 * 64 * passes


@pytest.mark.parametrize("bomb", [
    lambda: progressive_jpeg(repeats=containers.MAX_JPEG_SCANS + 1),
    lambda: b"\xff\xd8" + b"\xff" * (containers.MAX_FILL_BYTES + 10) + image_bytes("JPEG")[2:],
    lambda: png_with_empty_chunks(containers.MAX_CHUNKS + 1),
    lambda: gif_with_tiny_comment_blocks(containers.MAX_SUB_BLOCKS + 1),
], ids=["repeated-scans", "fill-bytes", "empty-chunks", "tiny-sub-blocks"])
def test_bombs_are_refused_by_the_container_scan_with_422_naming_the_limit(bomb):
    data = bomb()
    with pytest.raises(ImageError) as refused:  # by the container scan, before any pixel is decoded
        decode_image(data)
    assert refused.value.reason == "malformed" and "limit" in refused.value.message


def test_a_skinny_strip_is_refused_before_decoding():
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sIIBBBBB", 13, b"IHDR", 25_000_000, 1, 16, 0, 0, 0, 0)
    data = header + struct.pack(">I", zlib.crc32(header[12:])) + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    with pytest.raises(ImageError) as refused:
        decode_image(data)
    assert refused.value.reason == "shape" and "25000000x1" in refused.value.message
