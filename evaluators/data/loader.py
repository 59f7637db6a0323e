"""Batches from in-memory images: resize, augment and normalize whole batches at once.

No worker processes and no per-sample Python: a batch is gathered from the uint8 tensor, moved
to the device, converted, resized when the stored size differs from the resolution, randomly
cropped (after reflect padding) and flipped, then normalized. The randomness of batch ``b`` of epoch
``e`` depends only on (seed, e, b), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evaluators.data.arrays import ImageArrays


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation: random crop after padding by ``padding`` reflected pixels,
    and a random horizontal flip."""

    padding: int = 4
    flip: bool = True


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for key in keys:  # a simple, stable mix of the keys
        seed = (seed * 1_000_003 + key + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def shard_slice(count: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``count`` items split over ``world_size`` ranks (sizes
    differ by at most one, the first ranks taking the larger parts)."""
    size, extra = divmod(count, world_size)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


def random_crop_flip(x: torch.Tensor, augment: Augment, generator: torch.Generator,
                     rows: slice = slice(None), total: int | None = None) -> torch.Tensor:
    """Per-image random crop of a reflect-padded batch and random horizontal flip, vectorized.

    ``x`` holds ``rows`` of a batch of ``total`` images (default: all of them): the random draws are
    the whole batch's, so a shard is augmented exactly as within the whole batch.
    Reflection, not zeros: black borders on flat backgrounds become a strong, useless feature
    that stalls early training (seen on the synthetic set)."""
    n, _, h, w = x.shape
    total = n if total is None else total
    if augment.padding:
        pad = augment.padding
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (total,), generator=generator)[rows].to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (total,), generator=generator)[rows].to(x.device)
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, c, 2p+1, 2p+1, h, w) view
        x = windows[torch.arange(n, device=x.device), :, dy, dx]
    if augment.flip:
        flip = (torch.rand(total, generator=generator)[rows] < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


@dataclass(frozen=True)
class BatchPlan:
    """Which items form each batch: the order of epoch ``e`` depends only on (seed, e) when shuffled;
    ``drop_last`` drops a last partial batch unless the set is smaller than a batch; ``shard=(rank,
    world_size)``: the rank's contiguous part of every global batch (:func:`shard_slice`)."""

    count: int
    batch_size: int
    shuffle: bool = False
    drop_last: bool = False
    seed: int = 0
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, "
                             f"got {self.shard}")

    def __len__(self) -> int:
        full, rest = divmod(self.count, self.batch_size)
        return full if self.drop_last and self.count > self.batch_size else full + (rest > 0)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.count)
        return torch.randperm(self.count, generator=_generator(self.seed, epoch))

    def batch(self, order: torch.Tensor, batch: int) -> tuple[torch.Tensor, slice]:
        """The items of global batch ``batch`` in ``order`` and this rank's rows of it."""
        index = order[batch * self.batch_size:(batch + 1) * self.batch_size]
        return index, shard_slice(len(index), *self.shard)

    def shard_fraction(self, batch: int) -> float:
        """This rank's share of the items of global batch ``batch`` (1.0 when not sharded)."""
        count = min(self.batch_size, self.count - batch * self.batch_size)
        rows = shard_slice(count, *self.shard)
        return (rows.stop - rows.start) / count


class BatchLoader:
    """Iterate ``(images, labels)`` batches of ``data``, ready for the network.

    ``shuffle`` draws a new order each epoch; ``augment`` (None: none) applies to every batch;
    ``drop_last`` drops a last partial batch (training) unless the set is smaller than a batch.
    ``shard=(rank, world_size)``: each batch is the rank's contiguous part of the global batch of
    ``batch_size`` images (same order and augmentation on every rank; :func:`shard_slice`).
    """

    def __init__(self, data: ImageArrays, *, batch_size: int, resolution: int, mean: tuple[float, ...],
                 std: tuple[float, ...], channels: int = 3, shuffle: bool = False,
                 augment: Augment | None = None, drop_last: bool = False, seed: int = 0,
                 device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1)) -> None:
        self.plan = BatchPlan(len(data), batch_size, shuffle, drop_last, seed, shard)
        self.data, self.resolution, self.channels = data, resolution, channels
        self.augment, self.seed = augment, seed
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)

    def order(self, epoch: int) -> torch.Tensor:
        return self.plan.order(epoch)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches (this rank's shards of them) of ``epoch``, beginning at batch index ``start``."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            index, rows = self.plan.batch(order, b)
            images = self.prepare(self.data.images[index[rows]], epoch, b, rows=rows, total=len(index))
            yield images, self.data.labels[index[rows]].to(self.device)

    def shard_fraction(self, batch: int) -> float:
        """This rank's share of the images of global batch ``batch`` (1.0 when not sharded)."""
        return self.plan.shard_fraction(batch)

    def prepare(self, images: torch.Tensor, epoch: int = 0, batch: int = 0, *, rows: slice = slice(None),
                total: int | None = None) -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalized float at the loader's resolution and channels; ``images``
        are ``rows`` of a batch of ``total`` (for the augmentation's draws)."""
        x = images.to(self.device, non_blocking=True).float().div_(255)
        if x.shape[1] != self.channels:
            luma = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
            x = x.expand(-1, 3, -1, -1) if self.channels == 3 else (x * luma).sum(1, keepdim=True)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.resolution)
        if self.augment is not None:
            x = random_crop_flip(x, self.augment, _generator(self.seed, epoch, batch, 1), rows, total)
        return (x - self.mean) / self.std
