"""Cheap walks over JPEG, PNG and GIF structure before any decoding: what decoding would cost, and what to refuse.

A decoder's work is not width x height alone: a progressive JPEG is decoded once per scan, and a file can be
padded with millions of fill bytes, empty chunks or tiny sub-blocks that a parser walks one by one. These walks
read only the structure (C-speed `find` and `struct` over the bytes), so a hostile file is refused in milliseconds.
"""
import struct
from dataclasses import dataclass

from .errors import CifarlabError

MAX_JPEG_SCANS = 32  # scans per JPEG; encoders write 1 (baseline) to ~12 (progressive): each is a decode pass
MAX_FILL_BYTES = 65_536  # 0xFF fill bytes between JPEG markers; encoders write none or a few
MAX_CHUNKS = 20_000  # PNG chunks; a 10 MB PNG in 8 kB IDAT chunks has ~1,300
MAX_SUB_BLOCKS = 200_000  # GIF data sub-blocks (<= 255 bytes each); 10 MB of full ones is ~41,000
MAX_FRAMES = 1_000  # GIF images (frames)


class StructureError(CifarlabError, ValueError):
    """A file whose structure would cost more to parse or decode than the limits allow; the message says which."""


@dataclass(frozen=True)
class Structure:
    """What a walk found: decode passes (JPEG scans, GIF frames; 1 otherwise)."""

    passes: int = 1


def walk(data):
    """The Structure of JPEG, PNG and GIF bytes (others: Structure()); StructureError past a limit."""
    if data[:2] == b"\xff\xd8":
        return _walk_jpeg(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _walk_png(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _walk_gif(data)
    return Structure()


def _walk_jpeg(data):
    pos, scans, fill, end = 2, 0, 0, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:  # entropy-coded data of the last scan: find its end (a marker other than RSTn/stuffing)
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            fill += 1
            if fill > MAX_FILL_BYTES:
                raise StructureError(f"The JPEG has more than {MAX_FILL_BYTES:,} fill bytes between its markers; "
                                     f"the limit is {MAX_FILL_BYTES:,}.")
            pos += 1
            continue
        if marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stuffed byte, restart marker, TEM
            pos += 2
            continue
        if marker == 0xD9:  # end of image
            break
        if pos + 4 > end:
            break
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise StructureError(f"The JPEG has more than {MAX_JPEG_SCANS} scans (each one is a full decoding "
                                     f"pass); the limit is {MAX_JPEG_SCANS}.")
        pos += 2 + max(length, 2)
    return Structure(max(scans, 1))


def _walk_png(data):
    pos, chunks, end = 8, 0, len(data)
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_CHUNKS:
            raise StructureError(f"The PNG has more than {MAX_CHUNKS:,} chunks; the limit is {MAX_CHUNKS:,}.")
        pos += 12 + length
        if kind == b"IEND":
            break
    return Structure()


def _walk_gif(data):
    end = len(data)
    if end < 13:
        return Structure()
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = blocks = 0
    while pos < end:
        introducer = data[pos]
        if introducer == 0x3B:  # trailer
            break
        if introducer == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif introducer == 0x2C:  # image descriptor, optional local colour table, LZW code size, sub-blocks
            frames += 1
            if frames > MAX_FRAMES:
                raise StructureError(f"The GIF has more than {MAX_FRAMES:,} frames; the limit is {MAX_FRAMES:,}.")
            if pos + 10 > end:
                break
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:
            break  # not GIF structure: leave the verdict to the decoder
        while pos < end and data[pos]:
            blocks += 1
            if blocks > MAX_SUB_BLOCKS:
                raise StructureError(f"The GIF has more than {MAX_SUB_BLOCKS:,} data blocks; "
                                     f"the limit is {MAX_SUB_BLOCKS:,}.")
            pos += 1 + data[pos]
        pos += 1
    return Structure(max(frames, 1))
