import os
import time

import numpy as np
import pytest
from PIL import Image

from cifarlab.web import storage


def test_a_stored_upload_keeps_a_small_display_copy_and_the_exact_model_input(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    name = storage.save_image(Image.new("RGB", (2000, 1000), "red"), tmp_path, pixels)
    assert storage.is_valid_name(name)
    with Image.open(tmp_path / name) as copy:
        assert copy.format == "PNG" and max(copy.size) == storage.DISPLAY_MAX_SIDE
    np.testing.assert_array_equal(storage.load_input(tmp_path, name), pixels)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("name", ["../etc/passwd", "abc.png", "0" * 32 + ".jpg", "0" * 32 + ".png/..", "",
                                  "0" * 31 + "g.png"])
def test_only_generated_names_are_served(name):
    assert not storage.is_valid_name(name)


def test_no_model_input_for_unknown_or_input_names(tmp_path):
    name = storage.save_image(Image.new("RGB", (40, 40)), tmp_path, np.zeros((32, 32, 3), np.uint8))
    assert storage.load_input(tmp_path, storage.input_name(name)) is None
    assert storage.load_input(tmp_path, "0" * 32 + ".png") is None


def test_retention_deletes_the_oldest_uploads_first(tmp_path):
    names = []
    for i in range(5):
        names.append(storage.save_image(Image.new("RGB", (8, 8)), tmp_path))
        os.utime(tmp_path / names[-1], ns=(i * 10**9, i * 10**9))
    (tmp_path / "keep.txt").write_text("not an upload")
    storage.enforce_retention(tmp_path, max_files=2, max_bytes=10**9)
    assert sorted(os.listdir(tmp_path)) == sorted(names[3:] + ["keep.txt"])
    storage.enforce_retention(tmp_path, max_files=10, max_bytes=1)
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_retention_never_deletes_what_is_younger_than_the_keep_time(tmp_path):
    names = [storage.save_image(Image.new("RGB", (8, 8)), tmp_path) for _ in range(3)]
    assert storage.enforce_retention(tmp_path, max_files=2, max_bytes=10**9, keep_seconds=600) is False
    assert sorted(os.listdir(tmp_path)) == sorted(names)  # all three are young: none goes
    past_the_keep_time = time.time() + 601
    assert storage.enforce_retention(tmp_path, max_files=2, max_bytes=10**9, keep_seconds=600,
                                     now=past_the_keep_time) is True
    assert len(os.listdir(tmp_path)) == 2


def test_one_clients_burst_evicts_its_own_young_results_not_everyone_elses(tmp_path):
    small = Image.new("RGB", (8, 8))
    others = [storage.save_image(small, tmp_path, client="10.0.0.1"), storage.save_image(small, tmp_path, client="10.0.0.2")]
    for _ in range(8):  # a burst from one address, all younger than the keep time
        storage.save_image(small, tmp_path, client="10.0.0.9")
        storage.enforce_retention(tmp_path, max_files=6, max_bytes=10**9, keep_seconds=600, client_share=0.5)
    newcomer = storage.save_image(small, tmp_path, client="10.0.0.3")
    assert storage.enforce_retention(tmp_path, max_files=6, max_bytes=10**9, keep_seconds=600, client_share=0.5)
    left = os.listdir(tmp_path)
    assert set(others + [newcomer]) <= set(left) and len(left) == 6
    burst = [name for name in left if name.startswith(storage.client_tag("10.0.0.9"))]
    assert len(burst) == 3  # at its share (half of 6) the burst's own oldest went first


def test_within_its_share_a_client_keeps_its_young_results(tmp_path):
    small = Image.new("RGB", (8, 8))
    names = [storage.save_image(small, tmp_path, client=f"10.0.0.{n}") for n in range(3)]
    assert storage.enforce_retention(tmp_path, max_files=2, max_bytes=10**9, keep_seconds=600,
                                     client_share=0.5) is False
    assert sorted(os.listdir(tmp_path)) == sorted(names)
