"""Typed configuration of a data set (the schema behind ``conf/data/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from evaluators.data.synthetic import MAX_CLASSES
from search_spaces.errors import DataError

MAX_WORKERS = 64  # decode processes per training process

# name -> one-line description; the order is the order of error messages.
DATASETS: dict[str, str] = {
    "synthetic": "embedded shapes-and-textures set generated from a seed (no files needed)",
    "cifar10": "CIFAR-10 python batches (cifar-10-batches-py)",
    "cifar100": "CIFAR-100 python files (cifar-100-python), fine labels",
    "mnist": "MNIST IDX files (train-images-idx3-ubyte[.gz], ...)",
    "fashion_mnist": "Fashion-MNIST IDX files",
    "kmnist": "Kuzushiji-MNIST IDX files",
    "folder": "any image folder, one sub-folder per class (optionally train/ and test/ inside)",
}


@dataclass
class DataConfig:
    """Where the images come from and how they are split, sized and augmented.

    ``val_size`` and ``test_size`` are a fraction of the pool when below 1, else a count.
    ``test_size`` applies where the set has no test split of its own (synthetic, folder).
    """

    name: str = "synthetic"
    root: str | None = None  # directory of the files (every set except synthetic)
    resolution: int = 32  # images are resized to resolution x resolution
    channels: int = 3  # 3: grayscale is replicated to RGB; 1: RGB is converted to gray
    val_size: float = 0.1  # held out of the training set, with split_seed
    test_size: float = 1000
    split_seed: int = 0
    train_subset: int | None = None  # fixed-size subsets for fast proxies
    val_subset: int | None = None
    test_subset: int | None = None
    augment: bool = True  # random crop after padding (streamed: random-resized crop), + flip, when training
    crop_padding: int = 4  # reflect-padding pixels at the output resolution before the random crop
    flip: bool = True  # horizontal flip (off for digit-like sets)
    mean: list[float] | None = None  # per channel, 0..1; null: the train split's (streamed: ImageNet's)
    std: list[float] | None = None
    # folder only, for mobilenas train / reproduce action=train: decode images from disk in DataLoader
    # workers each step (random-resized crop + flip, ImageNet mean/std when mean/std are null) instead of
    # holding them in memory; null: when they would take more than 1 GiB in memory
    stream: bool | None = None
    workers: int | None = None  # stream decode processes (0: in the training process); null: CPUs - 1, <= 8
    # synthetic set only
    num_classes: int = 10  # 2..20
    train_size: int = 5000
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`DataError` naming the first bad field."""
        if self.name not in DATASETS:
            raise DataError(f"data.name: {self.name!r} is unknown; allowed: {', '.join(DATASETS)}")
        if self.name != "synthetic" and not self.root:
            raise DataError(f"data.root: data set {self.name!r} needs the directory of its files")
        if self.resolution < 8:
            raise DataError(f"data.resolution: must be >= 8, got {self.resolution}")
        if self.channels not in (1, 3):
            raise DataError(f"data.channels: must be 1 or 3, got {self.channels}")
        for key in ("val_size", "test_size"):
            value = getattr(self, key)
            if value < 0 or (value >= 1 and value != int(value)):
                raise DataError(f"data.{key}: must be a fraction below 1 or a whole count, got {value}")
        for key in ("train_subset", "val_subset", "test_subset"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise DataError(f"data.{key}: must be a positive count or null, got {value}")
        if not 0 <= self.crop_padding < self.resolution:
            raise DataError(f"data.crop_padding: must be in [0, resolution), got {self.crop_padding}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.channels:
                raise DataError(f"data.{key}: needs {self.channels} values (one per channel), got {value}")
        if self.stream and self.name != "folder":
            raise DataError(f"data.stream: true streams image folders only (data.name=folder), got "
                            f"data.name={self.name}; allowed: null, false")
        if self.workers is not None and not 0 <= self.workers <= MAX_WORKERS:
            raise DataError(f"data.workers: must be in 0..{MAX_WORKERS} or null (automatic), "
                            f"got {self.workers}")
        if self.std is not None and min(self.std) <= 0:
            raise DataError(f"data.std: values must be positive, got {self.std}")
        if self.name == "synthetic":
            if not 2 <= self.num_classes <= MAX_CLASSES:
                raise DataError(f"data.num_classes: the synthetic set has 2..{MAX_CLASSES} classes, "
                                f"got {self.num_classes}")
            if self.train_size < self.num_classes:
                raise DataError(f"data.train_size: needs at least one image per class, got {self.train_size}")
