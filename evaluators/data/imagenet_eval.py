"""ImageNet-style evaluation: the standard eval transform over a class-per-folder validation set,
streamed from disk by DataLoader workers.

Transform (torchvision's and timm's eval preset): resize the shorter side to ``resize`` (256) with
bilinear (torchvision weights) or bicubic (timm weights) resampling, centre-crop ``crop`` (224),
scale to [0, 1], normalize with the ImageNet mean and std. Labels: the class sub-folders sorted by
name (the synsets ``n01440764``, ... in ImageNet's order, as torchvision's ImageFolder does).
Every image is checked against :data:`evaluators.data.folder.MAX_IMAGE_PIXELS` before it is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from evaluators.data.folder import EXTENSIONS, class_dirs, decode_image, image_files
from search_spaces.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
MAX_IMAGES = 2_000_000  # files listed per evaluation (ImageNet's validation set has 50,000)


@dataclass(frozen=True)
class EvalTransform:
    """Resize shorter side, centre crop, normalize: a PIL image -> (3, crop, crop) float tensor."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height), the shorter side at ``resize``, the longer floored (torchvision's rounding)."""
        if width <= height:
            return self.resize, int(self.resize * height / width)
        return int(self.resize * width / height), self.resize

    def __call__(self, image: Image.Image) -> torch.Tensor:
        size = self.resized_size(*image.size)
        resized = image.convert("RGB").resize(size, INTERPOLATIONS[self.interpolation])
        width, height = resized.size
        top, left = int(round((height - self.crop) / 2.0)), int(round((width - self.crop) / 2.0))
        cropped = np.asarray(resized, dtype=np.float32)[top:top + self.crop, left:left + self.crop]
        array = (cropped / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def validate(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"evaluate.interpolation: {self.interpolation!r} is not one of auto, "
                              f"{', '.join(INTERPOLATIONS)}")
        if not 8 <= self.crop <= self.resize:
            raise ConfigError(f"evaluate.crop: must be in [8, evaluate.resize={self.resize}], "
                              f"got {self.crop}")


def list_images(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, label) for every image under ``root/<class>/`` and the class names (sorted)."""
    classes = class_dirs(root)
    items: list[tuple[Path, int]] = []
    for label, folder in enumerate(classes):
        items += [(p, label) for p in image_files(folder)]
        if len(items) > MAX_IMAGES:
            raise DataError(f"data.root: {root} holds more than {MAX_IMAGES} images "
                            "(evaluators.data.imagenet_eval.MAX_IMAGES)")
    if not items:
        raise DataError(f"data.root: no images ({', '.join(EXTENSIONS)}) in the class folders of {root}")
    return items, [c.name for c in classes]


def read_image(path: Path, transform: EvalTransform) -> torch.Tensor:
    """One image through ``transform``; a DataError for a bomb or an unreadable file."""
    return decode_image(path, transform)


class EvalFolder(Dataset):
    """Images read lazily; an unreadable one yields its error text (raised in the main process)."""

    def __init__(self, items: list[tuple[Path, int]], transform: EvalTransform) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        path, label = self.items[index]
        try:
            return read_image(path, self.transform), label, ""
        except DataError as err:  # a worker's exception would reach the user as a multi-line traceback
            return torch.zeros(3, self.transform.crop, self.transform.crop), label, str(err)


def eval_batches(items: list[tuple[Path, int]], transform: EvalTransform, *, batch_size: int,
                 num_workers: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches on ``device``; the first unreadable image raises its DataError."""
    loader = DataLoader(EvalFolder(items, transform), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    for images, labels, errors in loader:
        bad = next((e for e in errors if e), None)
        if bad:
            raise DataError(bad)
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
