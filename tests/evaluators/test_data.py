from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.data import DATASETS, DataConfig, load_dataset
from evaluators.data.arrays import ImageArrays
from evaluators.data.loader import Augment, BatchLoader
from evaluators.data.synthetic import synthetic_arrays
from search_spaces.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


# --- synthetic --------------------------------------------------------------------------
def test_synthetic_set_is_deterministic_per_seed_and_has_the_requested_shape():
    a = synthetic_arrays(60, num_classes=12, resolution=40, seed=3)
    b = synthetic_arrays(60, num_classes=12, resolution=40, seed=3)
    c = synthetic_arrays(60, num_classes=12, resolution=40, seed=4)
    assert a.images.shape == (60, 3, 40, 40) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels, minlength=12).tolist() == [5] * 12
    test = synthetic_arrays(60, num_classes=12, resolution=40, seed=3, split="test")
    assert not torch.equal(a.images, test.images)


def test_synthetic_classes_differ_in_structure_not_in_mean_colour():
    data = synthetic_arrays(1000, num_classes=10, resolution=32, seed=0)
    colour = data.images.float().mean(dim=(2, 3))  # mean RGB of each image
    fit, held = slice(0, 500), slice(500, 1000)
    centroids = torch.stack([colour[fit][data.labels[fit] == k].mean(0) for k in range(10)])
    predicted = torch.cdist(colour[held], centroids).argmin(1)
    assert (predicted == data.labels[held]).float().mean() < 0.2  # colour alone is near chance (0.1)
    # horizontal vs vertical gratings: opposite dominant gradient directions
    gray = data.images.float().mean(1)
    dy = (gray[:, 1:, :] - gray[:, :-1, :]).abs().mean(dim=(1, 2))
    dx = (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))
    ratio = dy / dx
    assert ratio[data.labels == 5].mean() > 1.5 > 0.67 > ratio[data.labels == 6].mean()


def test_load_dataset_splits_subsets_and_normalizes():
    cfg = DataConfig(train_size=200, test_size=40, val_size=0.25, train_subset=100, num_classes=4)
    splits = load_dataset(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 50, 40)
    assert (splits.num_classes, splits.resolution, splits.in_channels, splits.name) == (4, 32, 3, "synthetic")
    again = load_dataset(cfg)
    assert torch.equal(splits.val.images, again.val.images)
    other = load_dataset(DataConfig(train_size=200, test_size=40, val_size=0.25, num_classes=4, split_seed=1))
    assert not torch.equal(splits.val.labels, other.val.labels)
    images, labels = next(iter(splits.loader("train", 100)))
    assert images.shape == (100, 3, 32, 32) and images.dtype == torch.float32
    assert abs(float(images.mean())) < 0.1 and abs(float(images.std()) - 1) < 0.1
    assert labels.dtype == torch.int64


# --- loader -----------------------------------------------------------------------------
def _arrays(n: int = 10, size: int = 8, channels: int = 3) -> ImageArrays:
    images = torch.arange(n * channels * size * size, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ImageArrays(images.view(n, channels, size, size), torch.arange(n) % 3)


def test_loader_augmentation_is_reproducible_per_epoch_and_batch():
    loader = BatchLoader(_arrays(), batch_size=4, resolution=8, mean=(0.0,) * 3, std=(1.0,) * 3, shuffle=True,
                         augment=Augment(padding=2, flip=True), drop_last=True, seed=7)
    assert len(loader) == 2
    first = list(loader.batches(epoch=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, loader.batches(epoch=1), strict=True))
    resumed = list(loader.batches(epoch=1, start=1))
    assert torch.equal(resumed[0][0], first[1][0]) and torch.equal(resumed[0][1], first[1][1])
    other_epoch = list(loader.batches(epoch=2))
    assert not torch.equal(other_epoch[0][0], first[0][0])


def test_crop_with_padding_shifts_content_and_flip_mirrors():
    data = _arrays(n=64, size=8)
    plain = BatchLoader(data, batch_size=64, resolution=8, mean=(0.0,) * 3, std=(1.0,) * 3)
    crop = BatchLoader(data, batch_size=64, resolution=8, mean=(0.0,) * 3, std=(1.0,) * 3,
                       augment=Augment(padding=2, flip=False))
    flip = BatchLoader(data, batch_size=64, resolution=8, mean=(0.0,) * 3, std=(1.0,) * 3,
                       augment=Augment(padding=0, flip=True))
    x, cropped, flipped = next(iter(plain))[0], next(iter(crop))[0], next(iter(flip))[0]
    assert cropped.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    offsets = set()
    for image, source in zip(cropped, padded, strict=True):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(image, source[:, dy:dy + 8, dx:dx + 8])]
        assert found, "every crop is a window of the reflect-padded image"
        offsets.add(found[0])
    assert len(offsets) > 5  # offsets vary per image
    mirrored = torch.tensor([torch.equal(f, o.flip(2)) for f, o in zip(flipped, x, strict=True)])
    same = torch.tensor([torch.equal(f, o) for f, o in zip(flipped, x, strict=True)])
    assert mirrored.any() and same.any() and bool((mirrored | same).all())


def test_loader_resizes_and_replicates_grayscale():
    gray = _arrays(n=4, size=28, channels=1)
    loader = BatchLoader(gray, batch_size=4, resolution=32, mean=(0.5,) * 3, std=(0.5,) * 3, channels=3)
    images, _ = next(iter(loader))
    assert images.shape == (4, 3, 32, 32)
    assert torch.equal(images[:, 0], images[:, 2])


# --- CIFAR ------------------------------------------------------------------------------
def _write_cifar_batch(path: Path, n: int, label_key: str, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             label_key.encode(): list(rng.integers(0, classes, n))}
    path.write_bytes(pickle.dumps(batch))


def test_cifar10_and_cifar100_load_from_python_batches(tmp_path):
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for i in range(1, 6):
        _write_cifar_batch(c10 / f"data_batch_{i}", 8, "labels", 10, i)
    _write_cifar_batch(c10 / "test_batch", 6, "labels", 10, 9)
    splits = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=10))
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (30, 10, 6, 10)
    raw = pickle.loads((c10 / "test_batch").read_bytes())
    first = torch.from_numpy(np.asarray(raw[b"data"][0]).reshape(3, 32, 32))
    assert torch.equal(splits.test.images[0], first) and int(splits.test.labels[0]) == raw[b"labels"][0]

    c100 = tmp_path / "c100"
    c100.mkdir()
    _write_cifar_batch(c100 / "train", 20, "fine_labels", 100, 1)
    _write_cifar_batch(c100 / "test", 5, "fine_labels", 100, 2)
    splits = load_dataset(DataConfig(name="cifar100", root=str(c100), val_size=0.2, resolution=40))
    assert (len(splits.train), splits.num_classes) == (16, 100)
    assert next(iter(splits.loader("test", 5)))[0].shape == (5, 3, 40, 40)


def test_cifar_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"does not hold the cifar10 files \(missing data_batch_1.*test_batch"
                                         r" in it or in .*cifar-10-batches-py"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path / "nowhere")))
    for name in ("train", "test"):
        (tmp_path / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"train: not a CIFAR python batch"):
        load_dataset(DataConfig(name="cifar100", root=str(tmp_path)))


# --- IDX --------------------------------------------------------------------------------
def _write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _write_mnist(root: Path, gz: bool = True, n_train: int = 12, n_test: int = 4) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        _write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x803, gz)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x801, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_gzipped_or_not(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    splits = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), val_size=2))
    assert splits.train.images.shape == (10, 1, 28, 28)
    assert (len(splits.test), splits.num_classes, splits.in_channels) == (4, 10, 3)
    assert splits.test.labels.tolist() == [0, 1, 2, 3]
    images, _ = next(iter(splits.loader("train", 4, train=True)))
    assert images.shape == (4, 3, 32, 32)


def test_idx_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"is not a directory; an IDX data set needs train-images-idx3-ubyte"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path / "absent")))
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"has no t10k-labels-idx1-ubyte\[.gz\]"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((4, 2), np.uint8), 0x802, True)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: not an IDX file of 1 dimension"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)))


# --- image folder -----------------------------------------------------------------------
def _write_images(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 30)) -> None:
    for label, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, (40 * label, 10 * i, 200)).save(root / name / f"{i}.png")


def test_image_folder_loads_classes_resizes_and_holds_out_a_test_split(tmp_path):
    _write_images(tmp_path, {"cat": 6, "dog": 4})
    cfg = DataConfig(name="folder", root=str(tmp_path), resolution=36, test_size=0.2, val_size=2)
    splits = load_dataset(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (6, 2, 2, 2)
    assert splits.train.images.shape[1:] == (3, 36, 36)
    labels = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
    assert torch.bincount(labels).tolist() == [6, 4]
    red = torch.cat([splits.train.images, splits.val.images, splits.test.images])[:, 0, 0, 0]
    assert torch.equal(red // 40, labels.to(torch.uint8))  # each image kept its class folder's label


def test_image_folder_with_train_and_test_subfolders_and_errors(tmp_path):
    _write_images(tmp_path / "train", {"a": 3, "b": 3})
    _write_images(tmp_path / "test", {"a": 1, "b": 2})
    splits = load_dataset(DataConfig(name="folder", root=str(tmp_path), val_size=0, channels=1))
    assert (len(splits.train), len(splits.test), splits.in_channels) == (6, 3, 1)
    assert splits.test.labels.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match=r"has no sub-folders; expected one sub-folder of images per class"):
        load_dataset(DataConfig(name="folder", root=str(tmp_path / "train" / "a")))
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"broken.png: not a readable image"):
        load_dataset(DataConfig(name="folder", root=str(tmp_path)))


def test_bad_data_config_names_the_field():
    with pytest.raises(DataError, match=r"data.name: 'imagenet' is unknown; allowed: synthetic, cifar10"):
        load_dataset(DataConfig(name="imagenet"))
    with pytest.raises(DataError, match=r"data.root: data set 'cifar10' needs the directory"):
        load_dataset(DataConfig(name="cifar10"))
    with pytest.raises(DataError, match=r"data.num_classes: the synthetic set has 2..20 classes, got 50"):
        load_dataset(DataConfig(num_classes=50))
    with pytest.raises(DataError, match=r"data.mean: needs 3 values"):
        load_dataset(DataConfig(mean=[0.5]))
    with pytest.raises(DataError,
                       match=r"data.val_size: must be a fraction below 1 or a whole count, got 2.5"):
        load_dataset(DataConfig(val_size=2.5))


@pytest.mark.parametrize("name", list(DATASETS))
def test_data_presets_type_check_and_name_their_set(name):
    from search.schema import preset

    cfg = preset("data", name, DataConfig, "data")  # only DataConfig's keys, of its types
    cfg.validate()
    assert cfg.name == name and (cfg.root is None) == (name == "synthetic")
