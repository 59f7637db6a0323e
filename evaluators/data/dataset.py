"""``load_dataset``: any configured set as train / validation / test splits held in memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic

import torch

from evaluators.data.arrays import ImageArrays, ItemsT, head, resolve_count, split
from evaluators.data.config import DataConfig
from evaluators.data.loader import Augment, BatchLoader
from search_spaces.errors import DataError

if TYPE_CHECKING:
    from evaluators.data.folder import Listing

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
_STATS_SAMPLE = 5000  # images used to measure mean and std


class Splits(Generic[ItemsT]):
    """What every pipeline's splits share: the three splits (:func:`split_sets`) and the set's facts."""

    train: ItemsT
    val: ItemsT
    test: ItemsT
    num_classes: int
    resolution: int
    in_channels: int
    name: str
    details: dict[str, object]

    def split(self, name: str) -> ItemsT:
        if name not in SPLITS:
            raise DataError(f"split {name!r} is unknown; allowed: {', '.join(SPLITS)}")
        return getattr(self, name)

    def summary(self) -> dict[str, object]:
        """Plain facts for logs and metrics files."""
        return {"name": self.name, "num_classes": self.num_classes, "resolution": self.resolution,
                "in_channels": self.in_channels, "train": len(self.train), "val": len(self.val),
                "test": len(self.test), **self.details}


def split_sets(cfg: DataConfig, train: ItemsT, test: ItemsT | None) -> tuple[ItemsT, ItemsT, ItemsT]:
    """(train, val, test) as ``cfg`` says: a test split held out of ``train`` when the set has none
    (``test_size``, ``split_seed + 1``), then the validation split (``val_size``, ``split_seed``), then
    the subsets; a DataError when no training item is left."""
    if test is None:
        train, test = split(train, resolve_count(cfg.test_size, len(train)), cfg.split_seed + 1)
    train, val = split(train, resolve_count(cfg.val_size, len(train)), cfg.split_seed)
    if len(train) == 0:
        raise DataError(f"data.val_size: {cfg.val_size} leaves no training images")
    return head(train, cfg.train_subset), head(val, cfg.val_subset), head(test, cfg.test_subset)


@dataclass(frozen=True)
class DatasetSplits(Splits[ImageArrays]):
    """Three splits of one set and how to turn them into batches.

    The validation split is held out of the training set with ``DataConfig.split_seed``; a
    search looks at ``val`` only, never at ``test``. Images keep their stored size and channels;
    :meth:`loader` resizes to ``resolution`` and converts to ``in_channels``.
    """

    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    num_classes: int
    resolution: int
    in_channels: int
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment | None = None
    details: dict[str, object] = field(default_factory=dict)

    def loader(self, split: str, batch_size: int, *, train: bool = False, seed: int = 0,
               device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1)) -> BatchLoader:
        """Batches of ``split``; ``train=True`` shuffles, augments and drops a partial last batch;
        ``shard=(rank, world_size)``: each rank's part of every global batch of ``batch_size``."""
        return BatchLoader(
            self.split(split), batch_size=batch_size, resolution=self.resolution,
            mean=self.mean, std=self.std, channels=self.in_channels, shuffle=train,
            augment=self.augment if train else None, drop_last=train, seed=seed, device=device, shard=shard,
        )


def _load_raw(cfg: DataConfig, listed: Listing | None) -> tuple[ImageArrays, ImageArrays | None, int]:
    if cfg.name == "synthetic":
        from evaluators.data.synthetic import synthetic_arrays

        test_count = round(cfg.test_size * cfg.train_size) if cfg.test_size < 1 else int(cfg.test_size)
        common = {"num_classes": cfg.num_classes, "resolution": cfg.resolution, "seed": cfg.seed}
        return (synthetic_arrays(cfg.train_size, split="train", **common),
                synthetic_arrays(test_count, split="test", **common), cfg.num_classes)
    assert cfg.root is not None
    if cfg.name in ("cifar10", "cifar100"):
        from evaluators.data.cifar import load_cifar

        return load_cifar(cfg.root, cfg.name)
    if cfg.name in ("mnist", "fashion_mnist", "kmnist"):
        from evaluators.data.idx import load_idx

        return load_idx(cfg.root)
    from evaluators.data.folder import load_folder

    return load_folder(cfg.root, cfg.resolution, cfg.channels, listed)


def channel_stats(images: torch.Tensor, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of up to 5,000 images, after channel conversion."""
    sample = images[:_STATS_SAMPLE]
    identity = BatchLoader(ImageArrays(sample, torch.zeros(len(sample), dtype=torch.int64)),
                           batch_size=len(sample), resolution=sample.shape[-1], mean=(0.0,) * channels,
                           std=(1.0,) * channels, channels=channels)
    x = identity.prepare(sample)
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(std.tolist())


def load_dataset(cfg: DataConfig, listed: Listing | None = None) -> DatasetSplits:
    """Load (or generate) ``cfg``'s set and split it; :class:`DataError` for bad paths or fields.
    ``listed``: the folder's :func:`evaluators.data.folder.list_folder` when already listed."""
    cfg.validate()
    if cfg.stream:
        raise DataError("data.stream: true is for mobilenas train and reproduce action=train; this command "
                        "holds its images in memory; allowed here: null, false")
    train, raw_test, num_classes = _load_raw(cfg, listed)
    train, val, test = split_sets(cfg, train, raw_test)
    if cfg.mean is not None and cfg.std is not None:
        mean, std = tuple(cfg.mean), tuple(cfg.std)
    else:
        mean, std = channel_stats(train.images, cfg.channels)
        mean, std = tuple(cfg.mean or mean), tuple(cfg.std or std)
    augment = Augment(cfg.crop_padding, cfg.flip) if cfg.augment else None
    splits = DatasetSplits(train, val, test, num_classes, cfg.resolution, cfg.channels, cfg.name,
                           mean, std, augment, {"root": cfg.root} if cfg.root else {"seed": cfg.seed})
    log.info("data %s: %d train / %d val / %d test images, %d classes, %dx%d", cfg.name, len(train),
             len(val), len(test), num_classes, cfg.resolution, cfg.resolution)
    return splits
