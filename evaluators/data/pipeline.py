"""Which pipeline feeds training: images held in memory (:func:`load_dataset`) or an image folder
streamed from disk (:mod:`evaluators.data.stream`), behind one interface, :class:`TrainingData`.

``data.stream``: true streams, false holds in memory, null (the default) streams a folder whose
images would take more than :data:`STREAM_ABOVE_BYTES` in memory at the resolution.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Protocol

import torch

from evaluators.data.config import DataConfig
from evaluators.data.dataset import load_dataset
from evaluators.data.folder import in_memory_bytes, list_folder
from evaluators.data.stream import stream_folder

STREAM_ABOVE_BYTES = 2**30  # data.stream=null: a folder above 1 GiB in memory is streamed


class Batches(Protocol):
    """What the trainer iterates: :class:`evaluators.data.BatchLoader` or a stream's loader."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def shard_fraction(self, batch: int) -> float: ...


class TrainingData(Protocol):
    """What training needs of a data set: :class:`evaluators.data.DatasetSplits` or a stream's splits."""

    @property
    def num_classes(self) -> int: ...

    @property
    def resolution(self) -> int: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def val(self) -> Sized: ...

    @property
    def test(self) -> Sized: ...

    def loader(self, split: str, batch_size: int, *, train: bool = False, seed: int = 0,
               device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1)) -> Batches: ...

    def summary(self) -> dict[str, object]: ...


def load_training_data(cfg: DataConfig) -> TrainingData:
    """``cfg``'s splits for training: streamed from disk or held in memory as ``data.stream`` says."""
    cfg.validate()
    if cfg.stream is False or cfg.name != "folder":
        return load_dataset(cfg)
    if cfg.stream:
        return stream_folder(cfg)
    assert cfg.root is not None
    listed = list_folder(cfg.root)
    count = len(listed[0]) + (len(listed[1]) if listed[1] is not None else 0)
    if in_memory_bytes(count, cfg.channels, cfg.resolution) > STREAM_ABOVE_BYTES:
        return stream_folder(cfg, listed)
    return load_dataset(cfg, listed)
