"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from evaluators.data.arrays import ImageArrays
from evaluators.data.config import DataError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x803, 0x801


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    expected = ", ".join(f"{a}[.gz], {b}[.gz]" for a, b in FILES.values())
    raise DataError(f"data.root: {root} has no {stem}[.gz]; an IDX data set needs {expected}")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array stored in one IDX file; :class:`DataError` names the file when malformed."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = hex(int.from_bytes(raw[:4], "big")) if len(raw) >= 4 else "a truncated header"
        raise DataError(f"{path}: not an IDX file of {ndim} dimension(s) (magic {hex(magic)} expected, "
                        f"found {found})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(f"{path}: header says {shape} = {size} bytes of data, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_split(root: Path, split: str) -> ImageArrays:
    images_stem, labels_stem = FILES[split]
    images = read_idx(_find(root, images_stem), _IMAGES_MAGIC)
    labels = read_idx(_find(root, labels_stem), _LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{root}: {split} split has {len(images)} images but {len(labels)} labels")
    return ImageArrays(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels))


def load_idx(root: str | Path) -> tuple[ImageArrays, ImageArrays, int]:
    """(train, test, number of classes); images are (N, 1, H, W) uint8."""
    root = Path(root).expanduser()
    if not root.is_dir():
        expected = ", ".join(f"{a}[.gz], {b}[.gz]" for a, b in FILES.values())
        raise DataError(f"data.root: {root} is not a directory; an IDX data set needs {expected}")
    train, test = _read_split(root, "train"), _read_split(root, "test")
    return train, test, int(max(train.labels.max(), test.labels.max())) + 1
