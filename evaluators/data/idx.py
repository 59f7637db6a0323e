"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), gzipped or not, size-checked before reading."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from evaluators.data.arrays import ImageArrays
from search_spaces.errors import DataError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x803, 0x801
MAX_IDX_BYTES = 2**31  # data bytes one IDX file may declare (MNIST's train images: 47 MB)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    expected = ", ".join(f"{a}[.gz], {b}[.gz]" for a, b in FILES.values())
    raise DataError(f"data.root: {root} has no {stem}[.gz]; an IDX data set needs {expected}")


def _declared_shape(path: Path, head: bytes, magic: int) -> tuple[int, ...]:
    """The shape in an IDX header; :class:`DataError` when the magic is wrong or data too large."""
    ndim = magic & 0xFF
    if len(head) < 4 + 4 * ndim or int.from_bytes(head[:4], "big") != magic:
        found = hex(int.from_bytes(head[:4], "big")) if len(head) >= 4 else "a truncated header"
        raise DataError(f"{path}: not an IDX file of {ndim} dimension(s) (magic {hex(magic)} expected, "
                        f"found {found})")
    shape = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if math.prod(shape) > MAX_IDX_BYTES:
        raise DataError(f"{path}: header declares {shape} = {math.prod(shape)} bytes of data, above the "
                        f"limit of {MAX_IDX_BYTES} bytes (evaluators.data.idx.MAX_IDX_BYTES)")
    return shape


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array stored in one IDX file; :class:`DataError` names the file when malformed.

    The header is read first and checked against :data:`MAX_IDX_BYTES`; then exactly the declared
    number of bytes is read (inflated), never more, so a gzip bomb cannot fill the memory."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            shape = _declared_shape(path, handle.read(4 + 4 * (magic & 0xFF)), magic)
            size = math.prod(shape)
            raw = handle.read(size + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    if len(raw) != size:
        found = "more" if len(raw) > size else f"only {len(raw)}"
        raise DataError(f"{path}: header says {shape} = {size} bytes of data, file has {found}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


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
