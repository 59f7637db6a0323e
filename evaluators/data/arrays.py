"""Images held in memory as one uint8 tensor, with the splitting helpers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageArrays:
    """``images``: uint8 (N, C, H, W) at the set's stored size; ``labels``: int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), "
                             f"got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: torch.Tensor) -> ImageArrays:
        return ImageArrays(self.images[indices], self.labels[indices].long())

    def head(self, count: int | None) -> ImageArrays:
        """The first ``count`` images (all when None)."""
        return self if count is None or count >= len(self) else self.take(torch.arange(count))


def resolve_count(value: float, total: int) -> int:
    """A fraction of ``total`` when ``value`` < 1, else ``value`` itself (capped at ``total``)."""
    count = round(value * total) if value < 1 else int(value)
    return min(count, total)


def split(arrays: ImageArrays, held_out: int, seed: int) -> tuple[ImageArrays, ImageArrays]:
    """Shuffle with ``seed`` and hold out ``held_out`` images: (rest, held out)."""
    order = torch.randperm(len(arrays), generator=torch.Generator().manual_seed(seed))
    return arrays.take(order[held_out:]), arrays.take(order[:held_out])
