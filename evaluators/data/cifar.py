"""CIFAR-10 and CIFAR-100 from their standard python-pickle batches.

Pickle is used on these files only, as their official format requires; nothing else is unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from evaluators.data.arrays import ImageArrays
from evaluators.data.config import DataError

# name -> (directory name inside root, train files, test file, label key, classes)
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                b"labels", 10),
    "cifar100": ("cifar-100-python", ("train",), "test", b"fine_labels", 100),
}


def find_dir(root: str | Path, name: str) -> Path:
    """``root`` itself when it holds the files, else ``root/<official directory name>``."""
    folder, train_files, test_file, _, _ = LAYOUTS[name]
    root = Path(root).expanduser()
    expected = [*train_files, test_file]
    for candidate in (root, root / folder):
        if all((candidate / f).is_file() for f in expected):
            return candidate
    missing = [f for f in expected if not (root / f).is_file()]
    raise DataError(
        f"data.root: {root} does not hold the {name} files (missing {', '.join(missing)}); expected "
        f"{', '.join(expected)} in it or in {root / folder} (the python version of the data set)"
    )


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a CIFAR python batch with 'data' and {label_key.decode()!r} "
                        f"({type(err).__name__}: {err})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected 'data' of shape (N, 3072) and N labels, "
                        f"got {data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root: str | Path, name: str) -> tuple[ImageArrays, ImageArrays, int]:
    """(train, test, number of classes) of ``cifar10`` or ``cifar100``."""
    _, train_files, test_file, label_key, classes = LAYOUTS[name]
    folder = find_dir(root, name)

    def read(files: tuple[str, ...]) -> ImageArrays:
        parts = [_read_batch(folder / f, label_key) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.min() < 0 or labels.max() >= classes:
            raise DataError(f"{folder}: labels must be in 0..{classes - 1}, "
                            f"got {labels.min()}..{labels.max()}")
        return ImageArrays(torch.from_numpy(images), torch.from_numpy(labels))

    return read(train_files), read((test_file,)), classes
