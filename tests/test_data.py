import tarfile
import zipfile

import numpy as np
import pytest

from tests.helpers import write_folder
from cifarlab.ml.data import CIFAR10_CLASSES, DataError, load_dataset, load_image_folder



def test_folder_with_custom_classes_sorted_and_resized(tmp_path):
    root = write_folder(tmp_path / "ds", ["zebra", "apple", "mango"], size=(50, 20))
    (root / "train" / "apple" / "notes.txt").write_text("ignored")
    data = load_image_folder(root)
    assert data.class_names == ("apple", "mango", "zebra")
    assert data.x_train.shape == (9, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (9, 32, 32, 3)
    assert list(data.y_train) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert tuple(data.x_train[0, 0, 0]) == (20, 0, 200)  # apple is class index 1 in the folder list


def test_cifar10_classes_come_in_canonical_order(tmp_path):
    root = write_folder(tmp_path / "ds", sorted(CIFAR10_CLASSES), per_class=1)
    data = load_image_folder(root)
    assert data.class_names == CIFAR10_CLASSES
    assert list(data.y_test) == list(range(10))


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archives_load_like_folders_and_are_cached(tmp_path, kind, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "mydata", ["cat", "dog"], ext="jpg")
    archive = tmp_path / f"mydata.{kind}"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for p in files:
                z.write(p, p.relative_to(tmp_path))
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(root, arcname="mydata")
    folder, packed = load_image_folder(root), load_image_folder(archive)
    assert packed.class_names == folder.class_names == ("cat", "dog")
    np.testing.assert_array_equal(packed.x_train, folder.x_train)
    np.testing.assert_array_equal(packed.y_test, folder.y_test)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    again = load_image_folder(archive)
    np.testing.assert_array_equal(again.x_test, folder.x_test)


def test_split_validation_is_disjoint_and_deterministic(tmp_path):
    data = load_image_folder(write_folder(tmp_path / "ds", ["a", "b"], per_class=10))
    (x1, y1), (xv, yv) = data.split_validation(5, seed=1)
    (x2, _), (xv2, _) = data.split_validation(5, seed=1)
    assert len(x1) == 15 and len(xv) == 5
    np.testing.assert_array_equal(xv, xv2)


def test_split_validation_keeps_each_class_share(tmp_path):
    data = load_image_folder(write_folder(tmp_path / "ds", ["a", "b", "c"], per_class=10))
    (_, y_train), (_, y_val) = data.split_validation(6, seed=0)
    assert np.bincount(y_val).tolist() == [2, 2, 2] and np.bincount(y_train).tolist() == [8, 8, 8]


def test_a_small_dataset_keeps_most_images_for_training(tmp_path):
    data = load_image_folder(write_folder(tmp_path / "ds", ["a", "b"], per_class=15))
    assert data.default_val_size(2000) == 3 and data.default_val_size(2) == 2
    with pytest.raises(DataError, match="leaves too few of the 30 training images: give --val-size 3 or less"):
        data.split_validation(16)


def test_a_class_with_too_few_images_is_refused_by_name(tmp_path):
    data = load_image_folder(write_folder(tmp_path / "ds", ["a", "b"], per_class=4))
    with pytest.raises(DataError, match="Too small to train: class 'a' has 4 training images"):
        data.check_trainable()


def test_a_test_sample_draws_from_every_class_of_a_class_ordered_folder(tmp_path):
    data = load_image_folder(write_folder(tmp_path / "ds", ["a", "b", "c"], per_class=10))
    assert list(data.y_test) == sorted(data.y_test)  # a folder lists its test split class by class
    x, y = data.test_sample(len(data.y_test) // 2, seed=3)
    assert len(x) == len(y) == len(data.y_test) // 2 and set(y) == {0, 1, 2}
    np.testing.assert_array_equal(data.test_sample(len(y), seed=3)[0], x)
    assert not np.array_equal(data.test_sample(len(y), seed=4)[0], x)
    assert data.test_sample(10 ** 6)[0] is data.x_test


@pytest.mark.parametrize("layout,message", [
    ("missing", "not found"),
    ("no-test", "no images under test"),
    ("one-class", "only one class"),
    ("not-archive", "neither a folder"),
    ("bad-image", "could not be read"),
])
def test_bad_datasets_raise_clear_errors(tmp_path, layout, message):
    root = tmp_path / "ds"
    if layout == "no-test":
        write_folder(root, ["a", "b"])
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    elif layout == "one-class":
        write_folder(root, ["a"])
    elif layout == "not-archive":
        root = tmp_path / "data.bin"
        root.write_bytes(b"junk")
    elif layout == "bad-image":
        write_folder(root, ["a", "b"])
        (root / "train" / "a" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=message):
        load_image_folder(root)


def test_official_download_failure_is_one_clear_error(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure: no network")  # what keras raises when offline

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="--data"):
        load_dataset(None)
