"""What the tests share: tiny image-folder datasets, and the benchmarks' encoders and loopback servers."""
import io

import numpy as np
from PIL import Image

# the benchmarks' own builders, one import point for the tests (the package never imports benchmarks/)
from benchmarks.loadtest import (FakeBackend, free_port, gif_with_tiny_comment_blocks, image_bytes, multipart,
                                 png_with_empty_chunks, probe, probe_during, process_tree_rss_mb, progressive_jpeg,
                                 request, scan_bomb, slow_clients, start_server, stop_server)

__all__ = ["FakeBackend", "free_port", "gif_with_tiny_comment_blocks", "image_bytes", "multipart",
           "png_with_empty_chunks", "post_file", "probe", "probe_during", "process_tree_rss_mb", "progressive_jpeg", "request",
           "scan_bomb", "slow_clients", "start_server", "stop_server", "write_folder"]


def write_folder(root, classes, per_class=3, size=(32, 32), ext="png", noise=0):
    """A tiny image-folder dataset: root/{train,test}/<class>/<n>.<ext>, each class a colour (+- noise levels)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(per_class):
                pixels = np.array([20 * c, 10 * n, 200]) + rng.integers(-noise, noise + 1, (size[1], size[0], 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(folder / f"{n:04d}.{ext}")
    return root


def post_file(client, data, filename="cat.png", content_type="image/png", url="/"):
    """Post one file as the upload form does."""
    return client.post(url, data={"file": (io.BytesIO(data), filename, content_type)},
                       content_type="multipart/form-data")
