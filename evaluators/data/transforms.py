"""PIL image -> pixels: the standard ImageNet eval transform (:class:`EvalTransform`, resize the
shorter side then centre-crop) and, for streamed folders, the training augmentation
(:class:`RandomResizedCrop`) and the eval transform as uint8 pixels (:class:`CentreCrop`).

Transform (torchvision's and timm's eval preset): resize the shorter side to ``resize`` (256) with
bilinear (torchvision weights) or bicubic (timm weights) resampling, centre-crop ``crop`` (224),
scale to [0, 1], normalize with the ImageNet mean and std.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from search_spaces.errors import ConfigError

Pixels = Callable[[Image.Image, np.random.Generator], np.ndarray]  # image, draws -> uint8 (C, H, W)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


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

    def pixels(self, image: Image.Image, mode: str = "RGB") -> np.ndarray:
        """The resized, centre-cropped image in ``mode`` (RGB or L) as uint8 (crop, crop[, channels])."""
        size = self.resized_size(*image.size)
        resized = image.convert(mode).resize(size, INTERPOLATIONS[self.interpolation])
        width, height = resized.size
        top, left = int(round((height - self.crop) / 2.0)), int(round((width - self.crop) / 2.0))
        return np.asarray(resized, dtype=np.uint8)[top:top + self.crop, left:left + self.crop]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        cropped = self.pixels(image).astype(np.float32)
        array = (cropped / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def validate(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"evaluate.interpolation: {self.interpolation!r} is not one of auto, "
                              f"{', '.join(INTERPOLATIONS)}")
        if not 8 <= self.crop <= self.resize:
            raise ConfigError(f"evaluate.crop: must be in [8, evaluate.resize={self.resize}], "
                              f"got {self.crop}")



@dataclass(frozen=True)
class RandomResizedCrop:
    """Training augmentation: a random crop of ``scale`` x the area and an aspect ratio in ``ratio``
    (torchvision's draws, 10 tries then a centre crop), resized to ``resolution``, randomly flipped."""

    resolution: int
    flip: bool = True
    mode: str = "RGB"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(left, top, crop width, crop height)."""
        area, log_ratio = width * height, (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
        w, h = width, height
        if width / height < self.ratio[0]:
            h = round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            w = round(height * self.ratio[1])
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        width, height = image.size
        left, top, w, h = self.box(width, height, rng)
        flip = self.flip and rng.random() < 0.5
        if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when the crop stays >= resolution
            image.draft(self.mode, (math.ceil(width * self.resolution / w),
                                    math.ceil(height * self.resolution / h)))
        sx, sy = image.size[0] / width, image.size[1] / height
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        out = image.convert(self.mode).resize((self.resolution,) * 2, Image.Resampling.BILINEAR, box=box)
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _chw(np.asarray(out, dtype=np.uint8))


@dataclass(frozen=True)
class CentreCrop:
    """Evaluation: :class:`EvalTransform`'s resize and centre crop, as uint8 pixels."""

    transform: EvalTransform
    mode: str = "RGB"

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        return _chw(self.transform.pixels(image, self.mode))


def _chw(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
