"""Hostile files for every loader of user data: nothing runs, nothing huge is inflated or decoded."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import signal
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.data import DataConfig, cifar, folder, load_dataset, load_training_data
from evaluators.data.idx import MAX_IDX_BYTES, read_idx
from evaluators.data.imagenet_eval import list_images
from evaluators.training import load_checkpoint
from search.netadapt.checkpoint import load_netadapt_state
from search_spaces.errors import DataError


class MakesMarker:
    """Unpickling this runs ``os.mkdir(marker)``: what an attacker's payload would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _cifar_batch(n: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}


def _official_style(batch: dict[bytes, object]) -> bytes:
    """Protocol 2 with numpy 1's module names, as the official python batches are written."""
    raw = pickle.dumps(batch, protocol=2)
    return raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def test_malicious_cifar_batch_is_refused_without_running_code(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        (root / name).write_bytes(_official_style(_cifar_batch(4, i)))
    marker = tmp_path / "owned"
    payload = pickle.dumps({b"data": MakesMarker(marker), b"labels": []}, protocol=2)
    pickle.loads(payload.replace(b"owned", b"probe"))  # the payload is live with a plain unpickler
    assert (tmp_path / "probe").is_dir()
    (root / "data_batch_3").write_bytes(payload)

    with pytest.raises(DataError, match=r"data_batch_3: refused to unpickle global \w+.mkdir; a CIFAR python "
                                        r"batch holds only plain data and numpy arrays") as caught:
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=2))
    assert not marker.exists() and "\n" not in str(caught.value)

    (root / "data_batch_3").write_bytes(_official_style(_cifar_batch(4, 3)))  # genuine files still load
    splits = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=2))
    assert (len(splits.train), len(splits.test)) == (18, 4)
    assert splits.test.images[1].flatten().tolist() == _cifar_batch(4, 5)[b"data"][1].tolist()


def test_oversized_cifar_batch_or_array_is_refused_before_allocating(tmp_path, monkeypatch):
    for name in ("train", "test"):
        (tmp_path / name).write_bytes(pickle.dumps(_cifar_batch(4, 0) | {b"fine_labels": [1, 2, 3, 4]}))
    huge = pickle.dumps({b"data": np.zeros(1, np.uint8)}, protocol=2).replace(  # shape (0,) -> (2**30, 2**30)
        b"K\x00\x85", b"J\x00\x00\x00\x40J\x00\x00\x00\x40\x86", 1)
    (tmp_path / "test").write_bytes(huge)
    with pytest.raises(DataError, match=r"test: refused an array of type ndarray and shape \(1073741824, "
                                        r"1073741824\); a CIFAR batch holds numpy arrays of at most"):
        cifar.read_pickle_batch(tmp_path / "test")
    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 4096)
    with pytest.raises(DataError, match=r"train: \d+ bytes is above the 4096 bytes allowed for a CIFAR"):
        load_dataset(DataConfig(name="cifar100", root=str(tmp_path)))


def _idx_header(magic: int, *shape: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in shape)


def test_idx_gzip_bomb_is_not_inflated(tmp_path):
    """256 MiB of zeros after a 2-image header, in a 1.2 MB file: reading stops after the declared size."""
    member = gzip.compress(bytes(2**20), compresslevel=1)  # concatenated gzip members inflate as one stream
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(0x803, 2, 28, 28) + bytes(2 * 28 * 28)) + member * 256)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"header says \(2, 28, 28\) = 1568 bytes of data, file has more"):
            read_idx(path, 0x803)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_idx_header_with_an_absurd_shape_is_refused_before_reading(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(0x803, 4_000_000_000, 60_000, 60_000) + bytes(64)))
    with pytest.raises(DataError, match=rf"declares \(4000000000, 60000, 60000\) = \d+ bytes of data, "
                                        rf"above the limit of {MAX_IDX_BYTES} bytes"):
        read_idx(path, 0x803)
    short = tmp_path / "t10k-labels-idx1-ubyte"
    short.write_bytes(_idx_header(0x801, 10) + bytes(3))
    with pytest.raises(DataError, match=r"header says \(10,\) = 10 bytes of data, file has only 3"):
        read_idx(short, 0x801)


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    Image.new("RGB", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"IHDR")
    raw[start + 4:start + 12] = struct.pack(">II", width, height)
    raw[start + 17:start + 21] = struct.pack(">I", zlib.crc32(bytes(raw[start:start + 17])))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("side, message", [
    (9000, r"bomb.png: 9000 x 9000 = 81000000 pixels is above the limit of 67108864 pixels per image"),
    (100_000, r"bomb.png: refused as a decompression bomb \(Image size \(10000000000 pixels\) exceeds limit"),
], ids=["above-our-limit", "pillow-bomb-error"])
def test_decompression_bomb_image_is_refused_before_decoding(tmp_path, side, message):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "ok.png")
    _png_claiming(tmp_path / "dog" / "bomb.png", side, side)
    with pytest.raises(DataError, match=message) as caught:
        load_dataset(DataConfig(name="folder", root=str(tmp_path)))
    assert "\n" not in str(caught.value)


def test_image_folder_too_large_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(2):
            (tmp_path / name / f"{i}.png").write_bytes(b"never opened")
    monkeypatch.setattr(folder, "MAX_FOLDER_BYTES", 10_000)
    with pytest.raises(DataError, match=r"holds 4 images, 12288 bytes at data.resolution=32, above the limit "
                                        r"of 10000 bytes"):
        load_dataset(DataConfig(name="folder", root=str(tmp_path)))


@pytest.mark.parametrize("loader, error", [(load_checkpoint, DataError),
                                           (load_netadapt_state, DataError)],
                         ids=["train", "netadapt"])
def test_malicious_checkpoint_is_refused_without_running_code_or_advising_weights_only_false(
        tmp_path, loader, error):
    marker = tmp_path / "owned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "step": 1, "model": {"w": torch.ones(2)}, "extra": MakesMarker(marker)}, path)
    with pytest.raises(error) as caught:
        loader(path)
    message = str(caught.value)
    assert not marker.exists()
    assert f"{path}: not a readable" in message and re.search(r"refused global \w+\.mkdir", message)
    assert "holds objects other than tensors and plain data" in message
    assert "mobilenas never unpickles arbitrary objects" in message
    assert "weights_only" not in message and "\n" not in message


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """A failure instead of a hang: opening a FIFO for reading blocks until a writer comes."""
    def expire(*_: object) -> None:
        raise AssertionError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_folder_named_like_an_image_is_skipped_and_never_decoded(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{i}.png")
    fifo = tmp_path / "cat" / "x.jpg"
    os.mkfifo(fifo)
    os.symlink(fifo, tmp_path / "dog" / "link.jpg")  # a link within the root, to the FIFO
    (tmp_path / "dog" / "folder.png").mkdir()
    cfg = DataConfig(name="folder", root=str(tmp_path), resolution=8, val_size=0, test_size=0, workers=0)
    with deadline(10):
        for stream in (False, True):
            data = load_training_data(DataConfig(**{**cfg.__dict__, "stream": stream}))
            assert len(data.train) == 4
            assert [len(y) for _, y in data.loader("train", 4)] == [4]
        assert len(list_images(tmp_path)[0]) == 4  # mobilenas reproduce action=evaluate
        for path in (fifo, tmp_path / "dog" / "link.jpg"):  # a file swapped for a FIFO after the listing
            with pytest.raises(DataError, match=rf"{path.name}: not a regular file \(a FIFO\)"):
                folder.decode_image(path, lambda image: image.size)
