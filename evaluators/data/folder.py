"""Any image folder: one sub-folder per class, read with Pillow and resized once at load time.

``root/<class>/<image>``, or ``root/train/<class>/...`` with ``root/test/<class>/...`` (or
``val/``) beside it. Images are resized (shorter side) and centre-cropped to the resolution.
Refused: an image above :data:`MAX_IMAGE_PIXELS` or :data:`MAX_IMAGE_BYTES` before it is decoded (a
decompression bomb), a file that is not a regular file (a FIFO would block forever) before it is
read, a symbolic link (class folder or image) that leads outside the data folder when listed, and a
folder whose resized images would take more than :data:`MAX_FOLDER_BYTES` before anything is read
(:mod:`evaluators.data.stream` reads such folders from disk instead).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from evaluators.data.arrays import ImageArrays
from search_spaces.errors import DataError

T = TypeVar("T")

MAX_IMAGE_PIXELS = 2**26  # ~67 megapixels (8192 x 8192), below Pillow's own bomb warning at ~89 MP
MAX_IMAGE_BYTES = 2**28  # 256 MiB per file: above an uncompressed image of MAX_IMAGE_PIXELS RGB pixels
MAX_FOLDER_BYTES = 2**32  # the resized uint8 images of one split held in memory
MAX_IMAGES = 2_000_000  # files listed per folder (ImageNet's training set has 1,281,167)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def class_dirs(root: Path, boundary: Path) -> list[Path]:
    """The class sub-folders of ``root``, sorted by name (their order gives the labels); a DataError
    for a symbolic link among them that leads outside ``boundary`` (the data folder)."""
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a directory; expected one sub-folder of images per class")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in dirs:
        check_link(folder, boundary)
    if not dirs:
        raise DataError(f"data.root: {root} has no sub-folders; expected one sub-folder of images per class "
                        f"(e.g. {root}/cat/1.png, {root}/dog/2.jpg)")
    return dirs


def check_link(path: Path, boundary: Path) -> None:
    """A DataError when ``path`` is a symbolic link that leads outside ``boundary`` (links within it are
    fine)."""
    if not path.is_symlink():
        return
    real_root, target = boundary.resolve(), path.resolve()
    if target != real_root and real_root not in target.parents:
        raise DataError(f"{path}: a symbolic link to {target}, outside the data folder {real_root}; links "
                        "are followed only within data.root (copy the file in)")


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading without waiting (a FIFO would wait for a writer forever); a DataError
    unless it is a regular file of at most :data:`MAX_IMAGE_BYTES`, judged on the opened file (a file
    swapped after the listing is caught too)."""
    file = open(path, "rb", opener=lambda name, flags: os.open(name, flags | getattr(os, "O_NONBLOCK", 0)))
    info = os.fstat(file.fileno())
    if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_IMAGE_BYTES:
        return file
    file.close()
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device, socket or folder"
        raise DataError(f"{path}: not a regular file ({kind}); an image must be a plain file")
    raise DataError(f"{path}: {info.st_size} bytes is above the limit of {MAX_IMAGE_BYTES} bytes per image "
                    "file (evaluators.data.folder.MAX_IMAGE_BYTES)")


def decode_image(path: Path, use: Callable[[Image.Image], T]) -> T:
    """``use(image)`` on the image at ``path``, its size checked from the header before any pixel is
    decoded; a DataError for a file that is not a regular file, a file above :data:`MAX_IMAGE_BYTES` or
    :data:`MAX_IMAGE_PIXELS`, a decompression bomb or an unreadable file."""
    try:
        with _open_regular(path) as file, Image.open(file) as image:  # reads the header only
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
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (not a format Pillow reads, or damaged)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def _read_image(path: Path, resolution: int, mode: str) -> np.ndarray:
    fitted = decode_image(path, lambda image: ImageOps.fit(image.convert(mode), (resolution, resolution),
                                                           Image.Resampling.BILINEAR))
    array = np.asarray(fitted, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def image_names(folder: Path, boundary: Path) -> list[str]:
    """The names of the files directly in ``folder`` with an image extension, sorted, skipping what is
    not a file (a FIFO, a folder); a DataError for a symbolic link among them that leads outside
    ``boundary`` (the data folder)."""
    names = []
    with os.scandir(folder) as entries:  # the file type comes with the listing: no call per file
        for entry in entries:
            if os.path.splitext(entry.name)[1].lower() in EXTENSIONS:
                if entry.is_symlink():
                    check_link(Path(entry.path), boundary)
                if entry.is_file():
                    names.append(entry.name)
    return sorted(names)


def labelled_files(root: Path, classes: list[str], *, boundary: Path) -> list[tuple[str, int]]:
    """(``class/file`` relative to ``root``, label) for every image under ``root/<class>/`` of the given
    class names (the label is the name's index; a class missing in ``root`` has no images), links
    followed within ``boundary``; a DataError when there are none or more than :data:`MAX_IMAGES`."""
    items: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        if (root / name).is_dir():
            items += [(f"{name}/{file}", label) for file in image_names(root / name, boundary)]
        if len(items) > MAX_IMAGES:
            raise DataError(f"data.root: {root} holds more than {MAX_IMAGES} images "
                            "(evaluators.data.folder.MAX_IMAGES)")
    if not items:
        raise DataError(f"data.root: no images ({', '.join(EXTENSIONS)}) in the class folders of {root}")
    return items


@dataclass(frozen=True)
class FileSet:
    """Image files as ``root / names[i]`` with ``labels[i]``; the names are a numpy bytes array, so that
    forked workers share the listing instead of copying a million Python strings page by page."""

    root: Path
    names: np.ndarray
    labels: np.ndarray

    @staticmethod
    def of(root: Path, items: list[tuple[str, int]]) -> FileSet:
        names = np.array([os.fsencode(name) for name, _ in items], dtype=np.bytes_)
        return FileSet(root, names, np.array([label for _, label in items], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> Path:
        return self.root / os.fsdecode(self.names[index])

    def take(self, indices: torch.Tensor) -> FileSet:
        rows = indices.numpy()
        return FileSet(self.root, self.names[rows], self.labels[rows])


Listing = tuple[FileSet, FileSet | None, list[str]]  # training files, test files or None, class names


def list_folder(root: str | Path) -> Listing:
    """(training files, test files or None when the folder has no test split, class names):
    ``root/<class>/``, or ``root/train/<class>/`` with ``root/test/`` (or ``root/val/``) beside it,
    whose classes must be the training root's; symbolic links are followed within ``root``."""
    root = Path(root).expanduser()
    test_root = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = [d.name for d in class_dirs(train_root, root)]
    if test_root is not None:
        extra = sorted({d.name for d in class_dirs(test_root, root)} - set(classes))
        if extra:
            raise DataError(f"{test_root}: class folder(s) {', '.join(extra)} are not in {train_root}")
    train = FileSet.of(train_root, labelled_files(train_root, classes, boundary=root))
    test = FileSet.of(test_root, labelled_files(test_root, classes, boundary=root)) if test_root else None
    return train, test, classes


def in_memory_bytes(count: int, channels: int, resolution: int) -> int:
    """Bytes of ``count`` images held in memory at the resolution."""
    return count * channels * resolution**2


def read_files(files: FileSet, resolution: int, channels: int) -> ImageArrays:
    """The images of ``files`` as (N, C, R, R) uint8; a DataError before anything is read when they
    would take more than :data:`MAX_FOLDER_BYTES`."""
    size = in_memory_bytes(len(files), channels, resolution)
    if size > MAX_FOLDER_BYTES:
        raise DataError(f"data.root: {files.root} holds {len(files)} images, {size} bytes at "
                        f"data.resolution={resolution}, above the limit of {MAX_FOLDER_BYTES} bytes in "
                        "memory (evaluators.data.folder.MAX_FOLDER_BYTES); use fewer images or a lower "
                        "resolution, or stream them from disk (data.stream=true: train and reproduce "
                        "action=train)")
    mode = "RGB" if channels == 3 else "L"
    images = np.stack([_read_image(files.path(i), resolution, mode) for i in range(len(files))])
    return ImageArrays(torch.from_numpy(images), torch.from_numpy(files.labels))


def load_folder(root: str | Path, resolution: int, channels: int,
                listed: Listing | None = None) -> tuple[ImageArrays, ImageArrays | None, int]:
    """(train, test or None when the folder has no test split, number of classes); ``listed``:
    :func:`list_folder`'s result when already listed."""
    train, test, classes = listed if listed is not None else list_folder(root)
    return (read_files(train, resolution, channels),
            read_files(test, resolution, channels) if test is not None else None, len(classes))
