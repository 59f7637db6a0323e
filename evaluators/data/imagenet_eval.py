"""ImageNet-style evaluation: the standard eval transform (:class:`EvalTransform`) over a
class-per-folder validation set, streamed from disk by DataLoader workers
(:mod:`evaluators.data.stream`'s loader).

Labels: the class sub-folders sorted by name (the synsets ``n01440764``, ... in ImageNet's order, as
torchvision's ImageFolder does). Every image is checked against
:data:`evaluators.data.folder.MAX_IMAGE_PIXELS` before it is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from evaluators.data.folder import FileSet, class_dirs, decode_image, labelled_files
from evaluators.data.loader import BatchPlan
from evaluators.data.stream import StreamDataset, StreamLoader
from evaluators.data.transforms import IMAGENET_MEAN, IMAGENET_STD, CentreCrop, EvalTransform

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EvalTransform", "eval_batches", "list_images", "read_image"]


def list_images(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, label) for every image under ``root/<class>/`` and the class names (sorted)."""
    classes = [c.name for c in class_dirs(root, root)]
    return [(root / name, label) for name, label in labelled_files(root, classes, boundary=root)], classes


def read_image(path: Path, transform: EvalTransform) -> torch.Tensor:
    """One image through ``transform``; a DataError for a bomb or an unreadable file."""
    return decode_image(path, transform)


def eval_batches(items: list[tuple[Path, int]], transform: EvalTransform, *, batch_size: int,
                 num_workers: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches on ``device``, normalized with the ImageNet mean and std, decoded by
    ``num_workers`` processes (:class:`evaluators.data.stream.StreamLoader`); the first unreadable
    image raises its DataError."""
    files = FileSet.of(Path(), [(str(path), label) for path, label in items])  # paths as given
    dataset = StreamDataset(files, CentreCrop(transform), (3, transform.crop, transform.crop), seed=0)
    loader = StreamLoader(dataset, BatchPlan(len(files), batch_size), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          workers=num_workers, device=device)
    return loader.batches()
