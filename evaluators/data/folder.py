"""Any image folder: one sub-folder per class, read with Pillow and resized once at load time.

``root/<class>/<image>``, or ``root/train/<class>/...`` with ``root/test/<class>/...`` (or
``val/``) beside it. Images are resized (shorter side) and centre-cropped to the resolution.
An image above :data:`MAX_IMAGE_PIXELS` is refused before it is decoded (a decompression bomb),
and a folder whose resized images would take more than :data:`MAX_FOLDER_BYTES` before anything is read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from evaluators.data.arrays import ImageArrays
from search_spaces.errors import DataError

T = TypeVar("T")

MAX_IMAGE_PIXELS = 2**26  # ~67 megapixels (8192 x 8192), below Pillow's own bomb warning at ~89 MP
MAX_FOLDER_BYTES = 2**32  # the resized uint8 images of one split held in memory
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def class_dirs(root: Path) -> list[Path]:
    """The class sub-folders of ``root``, sorted by name (their order gives the labels)."""
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a directory; expected one sub-folder of images per class")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"data.root: {root} has no sub-folders; expected one sub-folder of images per class "
                        f"(e.g. {root}/cat/1.png, {root}/dog/2.jpg)")
    return dirs


def decode_image(path: Path, use: Callable[[Image.Image], T]) -> T:
    """``use(image)`` on the image at ``path``, its size checked from the header before any pixel is
    decoded; a DataError for a file above :data:`MAX_IMAGE_PIXELS`, a decompression bomb or an
    unreadable file."""
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: {width} x {height} = {width * height} pixels is above the limit "
                                f"of {MAX_IMAGE_PIXELS} pixels per image "
                                "(evaluators.data.folder.MAX_IMAGE_PIXELS)")
            return use(image)
    except DataError:
        raise
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: refused as a decompression bomb ({err})") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def _read_image(path: Path, resolution: int, mode: str) -> np.ndarray:
    fitted = decode_image(path, lambda image: ImageOps.fit(image.convert(mode), (resolution, resolution),
                                                           Image.Resampling.BILINEAR))
    array = np.asarray(fitted, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by extension), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def read_folder(root: Path, classes: list[str], resolution: int, channels: int) -> ImageArrays:
    """Every image under ``root/<class>/`` for the given class names, as (N, C, R, R) uint8."""
    mode = "RGB" if channels == 3 else "L"
    listed = {label: image_files(root / name) for label, name in enumerate(classes) if (root / name).is_dir()}
    count = sum(len(files) for files in listed.values())
    size = count * channels * resolution**2
    if size > MAX_FOLDER_BYTES:
        raise DataError(f"data.root: {root} holds {count} images, {size} bytes at "
                        f"data.resolution={resolution}, above the limit of {MAX_FOLDER_BYTES} bytes in "
                        "memory (evaluators.data.folder.MAX_FOLDER_BYTES); use fewer images or a lower "
                        "resolution")
    images, labels = [], []
    for label, files in listed.items():
        images += [_read_image(p, resolution, mode) for p in files]
        labels += [label] * len(files)
    if not images:
        raise DataError(f"data.root: no images ({', '.join(EXTENSIONS)}) in the class folders of {root}")
    return ImageArrays(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))


def load_folder(root: str | Path, resolution: int,
                channels: int) -> tuple[ImageArrays, ImageArrays | None, int]:
    """(train, test or None when the folder has no test split, number of classes)."""
    root = Path(root).expanduser()
    test_root = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = [d.name for d in class_dirs(train_root)]
    train = read_folder(train_root, classes, resolution, channels)
    test = read_folder(test_root, classes, resolution, channels) if test_root is not None else None
    if test_root is not None:
        extra = sorted({d.name for d in class_dirs(test_root)} - set(classes))
        if extra:
            raise DataError(f"{test_root}: class folder(s) {', '.join(extra)} are not in {train_root}")
    return train, test, len(classes)
