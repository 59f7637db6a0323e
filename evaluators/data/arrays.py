"""Images held in memory as one uint8 tensor, and the splitting helpers for it or any other set of
items with ``take`` and ``len`` (the files of a streamed folder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

ItemsT = TypeVar("ItemsT", bound="Items")


class Items(Protocol):
    """What can be split: a length, and ``take`` of the items at some indices."""

    def __len__(self) -> int: ...

    def take(self: ItemsT, indices: torch.Tensor) -> ItemsT: ...


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


def resolve_count(value: float, total: int) -> int:
    """A fraction of ``total`` when ``value`` < 1, else ``value`` itself (capped at ``total``)."""
    count = round(value * total) if value < 1 else int(value)
    return min(count, total)


def split(items: ItemsT, held_out: int, seed: int) -> tuple[ItemsT, ItemsT]:
    """Shuffle with ``seed`` and hold out ``held_out`` items: (rest, held out)."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
    return items.take(order[held_out:]), items.take(order[:held_out])


def head(items: ItemsT, count: int | None) -> ItemsT:
    """The first ``count`` items (all when None)."""
    return items if count is None or count >= len(items) else items.take(torch.arange(count))
