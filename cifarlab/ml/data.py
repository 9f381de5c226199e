"""Datasets: the official CIFAR-10 download, or an image-folder dataset (folder, .tar.gz or .zip)."""
import hashlib
import os
import tarfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import archives, children, quiet
from ..atomic import replace_atomically
from ..errors import CifarlabError
from ..images import INPUT_SIZE, ImageError, preprocess_bytes
from ..sidecar import CIFAR10_CLASSES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test")
MIN_IMAGES_PER_CLASS = 5  # fewer training images in a class than this: refused, there is nothing to learn from
CACHE_VERSION = "1"  # bump when decoding changes, so stale caches are not reused


class DataError(CifarlabError, RuntimeError):
    """A dataset that cannot be loaded; the message says what to do."""


@dataclass
class Dataset:
    """Images as uint8 (N, 32, 32, 3) raw RGB pixels, labels as int64 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    source: str

    def split_validation(self, size, seed=0):
        """Hold out about `size` training images, each class in its share (stratified); returns (train, val) as
        (x, y) pairs, val None when nothing is held out. DataError when it would leave fewer than half for training."""
        if size * 2 > len(self.y_train):
            raise DataError(f"A validation split of {size} leaves too few of the {len(self.y_train)} training images: "
                            f"give --val-size {len(self.y_train) // 10} or less.")
        if size <= 0:
            return (self.x_train, self.y_train), None
        order = np.random.default_rng(seed).permutation(len(self.y_train))
        by_class = order[np.argsort(self.y_train[order], kind="stable")]  # each class's images, still in random order
        counts = np.bincount(self.y_train, minlength=len(self.class_names))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        shares = counts * size / len(self.y_train)
        quotas = np.floor(shares).astype(int)
        quotas[np.argsort(quotas - shares, kind="stable")[:size - quotas.sum()]] += 1  # largest remainders: `size` in all
        val_idx = np.sort(np.concatenate([by_class[s:s + q] for s, q in zip(starts, quotas)]))
        train_idx = np.setdiff1d(np.arange(len(self.y_train)), val_idx)
        return (self.x_train[train_idx], self.y_train[train_idx]), (self.x_train[val_idx], self.y_train[val_idx])

    def default_val_size(self, preset_size):
        """The preset's validation size, at most a tenth of the training images (a small dataset keeps most)."""
        return min(preset_size, len(self.y_train) // 10)

    def check_trainable(self, min_per_class=MIN_IMAGES_PER_CLASS):
        """DataError naming the smallest class when some class has too few training images to learn from."""
        counts = np.bincount(self.y_train, minlength=len(self.class_names))
        if counts.min() < min_per_class:
            smallest = self.class_names[int(counts.argmin())]
            raise DataError(f"Too small to train: class '{smallest}' has {counts.min()} training images; "
                            f"give every class at least {min_per_class}.")

    def test_sample(self, count, seed=0):
        """(x, y) of `count` test images drawn at random by seed, in split order: an image folder lists its test split
        class by class, so its first `count` images would be one class."""
        if count >= len(self.y_test):
            return self.x_test, self.y_test
        picked = np.sort(np.random.default_rng([seed, 11]).permutation(len(self.y_test))[:count])
        return self.x_test[picked], self.y_test[picked]


def load_dataset(source=None):
    """Load the official CIFAR-10 when source is None, else the image-folder dataset at `source`."""
    return load_official() if source is None else load_image_folder(source)


def load_official():
    """Download (once, cached by Keras) and load the official CIFAR-10."""
    quiet.tensorflow()
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # keras wraps network failures in several exception types, often a bare Exception
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__  # its message says why (DNS, refused, ...)
        raise DataError(
            f"Could not download CIFAR-10 ({reason}). Pass a local copy instead: "
            "python train.py --data path/to/cifar10-jpeg.tar.gz (or an image folder with train/ and test/)."
        ) from exc
    return Dataset(x_train, y_train.reshape(-1).astype(np.int64), x_test,
                   y_test.reshape(-1).astype(np.int64), CIFAR10_CLASSES, "keras.datasets.cifar10")


def class_order(names):
    """CIFAR-10 classes in their canonical order; any other set of classes sorted by name."""
    names = set(names)
    if names == set(CIFAR10_CLASSES):
        return CIFAR10_CLASSES
    return tuple(sorted(names))


def _split_and_class(member_path):
    """('train'|'test', class) for a path like any/prefix/train/<class>/<file>, else None."""
    parts = Path(member_path).parts
    if len(parts) < 3 or parts[-3] not in SPLITS or parts[-1].startswith("."):
        return None
    if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    return parts[-3], parts[-2]


def _read_members(path):
    """Yield (split, class, name, bytes) for every image in a folder, .tar(.gz) or .zip dataset."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            key = _split_and_class(file.relative_to(path))
            if key and file.is_file():
                yield key[0], key[1], str(file.relative_to(path)), file.read_bytes()
    elif zipfile.is_zipfile(path) or tarfile.is_tarfile(path):  # read in place: nothing is extracted to disk
        for member in archives.members(path):
            key = _split_and_class(member.name)
            if key:
                yield key[0], key[1], member.name, member.read()
    else:
        raise DataError(f"{path} is neither a folder nor a .tar.gz/.zip archive.")


def _decode_chunk(blobs):
    """Decode a list of image bytes into a uint8 (N, 32, 32, 3) array (runs in a worker process)."""
    out = np.empty((len(blobs), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    for i, blob in enumerate(blobs):
        out[i] = preprocess_bytes(blob)
    return out


def _decode_all(blobs, workers):
    """Decode many images, in parallel when there are many."""
    if len(blobs) < 2000 or workers <= 1:
        return _decode_chunk(blobs)
    chunks = [blobs[i:i + 2500] for i in range(0, len(blobs), 2500)]
    with ProcessPoolExecutor(workers, initializer=children.die_with_parent, initargs=(os.getpid(),)) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, chunks)))


def _cache_path(path):
    """Where the decoded arrays of a dataset are cached, keyed by its path, size and mtime."""
    stat = path.stat()
    key = f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    root = Path(os.environ.get("CIFARLAB_CACHE", Path.home() / ".cache" / "cifarlab"))
    return root / f"{path.name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


def load_image_folder(source, use_cache=True):
    """Load PATH/train/<class>/* and PATH/test/<class>/* (or an archive of them) as a Dataset."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"Dataset not found: {path}")
    cache = _cache_path(path) if use_cache and path.is_file() else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return Dataset(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                           tuple(str(c) for c in z["class_names"]), str(path))

    members = {split: [] for split in SPLITS}
    for split, cls, name, blob in _read_members(path):
        members[split].append((cls, name, blob))
    for split in SPLITS:
        if not members[split]:
            raise DataError(f"{path} has no images under {split}/<class>/ (expected train/ and test/ folders).")
    class_names = class_order(cls for split in SPLITS for cls, _, _ in members[split])
    if len(class_names) < 2:
        raise DataError(f"{path} has only one class ({class_names[0]}); at least two are needed.")
    index = {name: i for i, name in enumerate(class_names)}

    arrays = {}
    workers = min(4, os.cpu_count() or 1)
    for split in SPLITS:
        items = sorted(members[split], key=lambda m: (index[m[0]], m[1]))
        try:
            x = _decode_all([blob for _, _, blob in items], workers)
        except ImageError as exc:
            raise DataError(f"{path}: an image in {split}/ could not be read: {exc.message}") from None
        arrays[split] = (x, np.array([index[cls] for cls, _, _ in items], np.int64))
    data = Dataset(*arrays["train"], *arrays["test"], class_names, str(path))

    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(cache, lambda tmp: np.savez(tmp, x_train=data.x_train, y_train=data.y_train,
                                                       x_test=data.x_test, y_test=data.y_test,
                                                       class_names=np.array(class_names)))
    return data


@dataclass
class FeedbackData:
    """A feedback export (`train.py feedback export`) read for fine-tuning: users' corrections to train on, a held-out
    share of them to judge the result by, and their "none of these" images as outliers."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    outliers: np.ndarray
    source: str


def held_out(name, share):
    """True for the `share` of file names kept out of training, the same ones on every run (by a hash of the name)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 2**32 < share


def load_feedback_export(folder, class_names, holdout_share):
    """FeedbackData from DIR/train/<class>/*.png and DIR/outliers/*.png; DataError for anything else."""
    path = Path(folder)
    if not (path / "manifest.json").is_file():
        raise DataError(f"{path} is not a feedback export (no manifest.json): make one with "
                        "`python train.py feedback export --out DIR`.")
    index = {name: i for i, name in enumerate(class_names)}
    picked = {True: ([], []), False: ([], [])}
    for file in sorted((path / "train").glob("*/*")):
        if file.parent.name not in index:
            raise DataError(f"{file}: class {file.parent.name!r} is not one the model knows ({', '.join(class_names)}).")
        images, labels = picked[held_out(file.name, holdout_share)]
        images.append(file.read_bytes())
        labels.append(index[file.parent.name])
    outliers = [file.read_bytes() for file in sorted((path / "outliers").glob("*"))]
    if not picked[True][0] and not picked[False][0] and not outliers:
        raise DataError(f"{path} holds no images: nothing was flagged (or review rejected it all).")
    try:
        arrays = [(_decode_chunk(images), np.array(labels, np.int64)) for images, labels in (picked[False],
                                                                                            picked[True])]
        bank = _decode_chunk(outliers)
    except ImageError as exc:
        raise DataError(f"{path}: an image could not be read: {exc.message}") from None
    return FeedbackData(*arrays[0], *arrays[1], bank, str(path))
