"""An image folder streamed from disk: each batch decoded on demand by DataLoader worker processes.

For folders too large to hold in memory (ImageNet: 1.28 M images). The layout, listing, labels,
splits and hostile-input checks are the in-memory folder loader's (:mod:`evaluators.data.folder`):
the same files land in the same train / val / test splits with the same seeds. Training batches get
the standard ImageNet augmentation: a random-resized crop (scale 0.08..1, aspect 3/4..4/3, as
torchvision's ``RandomResizedCrop``) to the resolution and a horizontal flip; evaluation batches the
standard eval transform at the resolution (resize the shorter side to resolution / 0.875, centre
crop; :class:`evaluators.data.transforms.EvalTransform`). Workers return uint8 pixels (pinned on
CUDA); the main process normalizes them on the device.

Exact resume: the batches are planned as the in-memory loader's (:class:`BatchPlan`: the order of
epoch ``e`` depends on (seed, e), each rank takes its contiguous part of every global batch) and the
augmentation of an image depends only on (seed, epoch, its position in the epoch), never on the
worker that decodes it: any number of workers gives the same batches, and a resumed run the
batches an uninterrupted one would have seen. A JPEG is decoded at the smallest DCT scale that still
covers its crop at the resolution (Pillow's ``draft``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from evaluators.data.config import DataConfig
from evaluators.data.dataset import Splits, split_sets
from evaluators.data.folder import FileSet, Listing, decode_image, list_folder
from evaluators.data.loader import BatchPlan
from evaluators.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CentreCrop,
    EvalTransform,
    Pixels,
    RandomResizedCrop,
)
from search_spaces.errors import DataError

log = logging.getLogger(__name__)
EVAL_CROP_FRACTION = 0.875  # the eval transform's crop / resize (224 / 256)
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)  # ImageNet's, for one channel
MAX_AUTO_WORKERS = 8
Key = tuple[int, int, int]  # (file index, epoch, position in the epoch): what a worker decodes


class StreamDataset(Dataset):
    """Decodes ``files`` by :data:`Key`; an unreadable image yields its error text (raised in the main
    process: a worker's exception would reach the user as a multi-line traceback)."""

    def __init__(self, files: FileSet, pixels: Pixels, shape: tuple[int, int, int], seed: int) -> None:
        self.files, self.pixels, self.shape, self.seed = files, pixels, shape, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: Key) -> tuple[np.ndarray, int, str]:
        index, epoch, position = key
        label = int(self.files.labels[index])
        rng = np.random.default_rng([self.seed % 2**64, epoch, position])
        path = self.files.path(index)
        try:
            return decode_image(path, lambda image: self.pixels(image, rng)), label, ""
        except DataError as err:
            return np.zeros(self.shape, dtype=np.uint8), label, str(err)


def collate(samples: list[tuple[np.ndarray, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 images, labels, error texts) of a batch; the images stacked by numpy straight into shared
    memory when in a worker (torch.stack's intra-op threads crawl on a busy machine: 0.75 s a batch)."""
    images = torch.empty((len(samples), *samples[0][0].shape), dtype=torch.uint8)
    if get_worker_info() is not None:
        images.share_memory_()
    np.stack([pixels for pixels, _, _ in samples], out=images.numpy())
    labels = torch.tensor([label for _, label, _ in samples], dtype=torch.int64)
    return images, labels, [error for _, _, error in samples]


class PlanSampler(Sampler[list[Key]]):
    """This rank's :data:`Key` lists of epoch ``epoch`` from batch ``start`` (set before iterating);
    the global batches of :class:`BatchPlan`, so every rank decodes only its own images."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan, self.epoch, self.start = plan, 0, 0

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __iter__(self) -> Iterator[list[Key]]:
        order, size = self.plan.order(self.epoch), self.plan.batch_size
        for b in range(self.start, len(self.plan)):
            index, rows = self.plan.batch(order, b)
            if rows.stop > rows.start:  # a last evaluation batch may hold fewer images than ranks
                yield [(int(index[r]), self.epoch, b * size + r) for r in range(rows.start, rows.stop)]


class StreamLoader:
    """Iterate ``(images, labels)`` batches of a :class:`StreamDataset` on ``device``, normalized: the
    interface of :class:`evaluators.data.BatchLoader` (``batches(epoch, start)``, ``shard_fraction``).
    ``persistent``: keep the worker processes between epochs (the training loader). One iteration at a
    time: starting another restarts the workers' queue."""

    def __init__(self, dataset: StreamDataset, plan: BatchPlan, *, mean: tuple[float, ...],
                 std: tuple[float, ...], workers: int, device: str | torch.device = "cpu",
                 persistent: bool = False) -> None:
        self.plan, self.device = plan, torch.device(device)
        self.sampler = PlanSampler(plan)
        # its own generator: each new iteration draws the workers' base seed (unused here) from it, not
        # from the global RNG that dropout uses (a resumed run starts one iteration more)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers, collate_fn=collate,
                                 pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                                 persistent_workers=persistent and workers > 0)
        mean_, std_ = (torch.tensor(v, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
                       for v in (mean, std))
        self.scale, self.shift = 1 / (255 * std_), -mean_ / std_  # (x / 255 - mean) / std, one multiply-add

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches (this rank's shards of them) of ``epoch``, beginning at batch index ``start``;
        the first unreadable image raises its DataError."""
        if start >= len(self.plan):
            return
        self.sampler.epoch, self.sampler.start = epoch, start
        for images, labels, errors in self.loader:
            bad = next((e for e in errors if e), None)
            if bad:
                raise DataError(bad)
            x = images.to(self.device, non_blocking=True).float().mul_(self.scale).add_(self.shift)
            yield x, labels.to(self.device, non_blocking=True)

    def shard_fraction(self, batch: int) -> float:
        return self.plan.shard_fraction(batch)


@dataclass(frozen=True)
class StreamSplits(Splits[FileSet]):
    """Three splits of an image folder as file lists, and how to stream them as batches: the interface
    of :class:`evaluators.data.DatasetSplits` that training uses (``loader``, ``summary``, sizes)."""

    train: FileSet
    val: FileSet
    test: FileSet
    num_classes: int
    resolution: int
    in_channels: int
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    workers: int
    augment: bool = True
    flip: bool = True
    details: dict[str, object] = field(default_factory=dict)

    def pixels(self, train: bool) -> Pixels:
        mode = "RGB" if self.in_channels == 3 else "L"
        if train and self.augment:
            return RandomResizedCrop(self.resolution, self.flip, mode)
        resize = round(self.resolution / EVAL_CROP_FRACTION)
        return CentreCrop(EvalTransform(resize=resize, crop=self.resolution), mode)

    def loader(self, split: str, batch_size: int, *, train: bool = False, seed: int = 0,
               device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1)) -> StreamLoader:
        """Batches of ``split``; ``train=True`` shuffles, augments, drops a partial last batch and keeps
        its workers between epochs; ``shard=(rank, world_size)``: each rank's part of every global batch."""
        files = self.split(split)
        shape = (self.in_channels, self.resolution, self.resolution)
        dataset = StreamDataset(files, self.pixels(train), shape, seed)
        plan = BatchPlan(len(files), batch_size, shuffle=train, drop_last=train, seed=seed, shard=shard)
        return StreamLoader(dataset, plan, mean=self.mean, std=self.std, workers=self.workers, device=device,
                            persistent=train)


def default_workers() -> int:
    """Decode processes per training process: the CPUs this process may use, shared by the processes
    torchrun started on this machine, less one for the training process; at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:  # not set by torchrun
        local_processes = 1
    per_process = cpus // local_processes
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


def stream_folder(cfg: DataConfig, listed: Listing | None = None) -> StreamSplits:
    """``cfg``'s folder as :class:`StreamSplits`: the splits of :func:`evaluators.data.load_dataset`
    (same seeds, same files); ``listed``: :func:`evaluators.data.folder.list_folder`'s result when
    already listed."""
    assert cfg.root is not None
    files, test_files, classes = listed if listed is not None else list_folder(cfg.root)
    train, val, test = split_sets(cfg, files, test_files)
    imagenet = (IMAGENET_MEAN, IMAGENET_STD) if cfg.channels == 3 else (GRAY_MEAN, GRAY_STD)
    mean, std = tuple(cfg.mean or imagenet[0]), tuple(cfg.std or imagenet[1])
    workers = default_workers() if cfg.workers is None else cfg.workers
    log.info("data %s (streamed from disk, data.workers=%d): %d train / %d val / %d test images, %d classes, "
             "%dx%d", cfg.name, workers, len(train), len(val), len(test), len(classes), cfg.resolution,
             cfg.resolution)
    return StreamSplits(train, val, test, len(classes), cfg.resolution, cfg.channels, cfg.name, mean, std,
                        workers, cfg.augment, cfg.flip, {"root": str(cfg.root), "pipeline": "stream"})
