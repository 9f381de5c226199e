"""Re-encode every image of an image-folder archive as JPEG at another quality (4:2:0, PIL's default).

    python results/requantize.py ../shared/data/cifar10-jpeg.tar.gz runs/cifar10-q50.tar.gz --quality 50

Used to measure how sensitive training is to JPEG compression: the shared copy is already JPEG quality 75
and no original is reachable here, so the cost of that first compression cannot be measured, only the
cost of compressing further.
"""
import argparse
import io
import math
import tarfile

import numpy as np
from PIL import Image


def requantize(src, dst, quality):
    """Copy the tar.gz at src to dst with each image re-encoded at `quality`; returns (count, PSNR in dB)."""
    count, squared_error = 0, 0.0
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin:
            if not member.isfile():
                tout.addfile(member)
                continue
            with Image.open(tin.extractfile(member)) as image:
                rgb = image.convert("RGB")
            buffer = io.BytesIO()
            rgb.save(buffer, "JPEG", quality=quality)
            member.size = buffer.tell()
            buffer.seek(0)
            with Image.open(buffer) as image:
                squared_error += np.mean((np.asarray(image, dtype=np.float64) - np.asarray(rgb, dtype=np.float64)) ** 2)
            buffer.seek(0)
            tout.addfile(member, buffer)
            count += 1
    return count, 10 * math.log10(255 ** 2 / (squared_error / max(count, 1)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="image-folder dataset as .tar.gz")
    p.add_argument("dst", help="output .tar.gz")
    p.add_argument("--quality", type=int, required=True, help="JPEG quality 1..95")
    args = p.parse_args()
    count, psnr = requantize(args.src, args.dst, args.quality)
    print(f"{count} images re-encoded at quality {args.quality} -> {args.dst}; PSNR against the source {psnr:.2f} dB")


if __name__ == "__main__":
    main()
