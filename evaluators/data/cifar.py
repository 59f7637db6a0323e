"""CIFAR-10 and CIFAR-100 from their standard python-pickle batches.

Pickle is used on these files only, as their official format requires, and through a restricted
unpickler: it builds dicts, lists, strings, numbers and numpy arrays, and refuses every other
global, so a crafted batch cannot run code. Files above :data:`MAX_BATCH_BYTES` are refused unread.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluators.data.arrays import ImageArrays
from search_spaces.errors import DataError

MAX_BATCH_BYTES = 512 * 2**20  # an official CIFAR-10 batch is ~31 MB, CIFAR-100's train file ~155 MB
# The only globals a CIFAR batch needs (module, name): numpy array and scalar reconstruction (numpy 1
# and 2 module names) and _codecs.encode, which protocol-2 pickles use for byte strings.
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})

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


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global raises :class:`DataError`."""

    def __init__(self, handle: Any, path: Path) -> None:
        super().__init__(handle, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(f"{self.path}: refused to unpickle global {module}.{name}; a CIFAR python "
                            "batch holds only plain data and numpy arrays (mobilenas never unpickles other "
                            "objects)")
        found = super().find_class(module, name)
        return self._sized(found) if name == "_reconstruct" else found

    def _sized(self, reconstruct: Any) -> Any:
        """``_reconstruct`` allocates the shape it is given before the data is read: bound it."""
        def checked(subtype: Any, shape: Any, dtype: Any) -> Any:
            if subtype is not np.ndarray or math.prod(np.atleast_1d(shape).tolist()) > MAX_BATCH_BYTES:
                kind = getattr(subtype, "__name__", subtype)
                raise DataError(f"{self.path}: refused an array of type {kind} and shape {shape}; a CIFAR "
                                f"batch holds numpy arrays of at most {MAX_BATCH_BYTES} elements")
            return reconstruct(subtype, shape, dtype)
        return checked


def read_pickle_batch(path: Path) -> Any:
    """The object in one CIFAR batch file, through :class:`_BatchUnpickler`, size-checked first."""
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise DataError(f"{path}: {size} bytes is above the {MAX_BATCH_BYTES} bytes allowed for a CIFAR "
                        "batch (the largest official file is ~155 MB)")
    with path.open("rb") as handle:
        return _BatchUnpickler(handle, path).load()


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = read_pickle_batch(path)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except DataError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError,
            IndexError) as err:
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
