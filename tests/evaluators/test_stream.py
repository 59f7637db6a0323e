"""An image folder streamed from disk for training: same splits and batch order as in memory, batches
fixed by (seed, epoch) whatever the workers, exact resume, hostile files refused in one line."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluators.data.folder as folder
import evaluators.data.pipeline as pipeline
from evaluators.data import DataConfig, DatasetSplits, load_dataset, load_training_data
from evaluators.data.stream import StreamSplits
from evaluators.data.transforms import RandomResizedCrop
from evaluators.training import CHECKPOINT, TrainConfig, fit, load_checkpoint
from search_spaces.blockstring import from_string
from search_spaces.builder import build_model
from search_spaces.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "in_r32_c3 stem_k3_c8_s2_hs ir_k3_e16_c8_s2_se_re ir_k3_e24_c16_s2_hs head_c32_h48_hs_d0.2_n3"


def write_folder(root: Path, classes: int = 3, per_class: int = 10) -> Path:
    """Random-pixel images of varied sizes, PNG and JPEG, one sub-folder per class."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (24 + 3 * i, 40 - i, 3), dtype=np.uint8)
            pixels[..., c] = 255  # the class shows in its colour: a few steps learn something
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder"))


def config(root: Path, **changes: object) -> DataConfig:
    base = DataConfig(name="folder", root=str(root), resolution=32, val_size=6, test_size=6, stream=True,
                      workers=0)
    return DataConfig(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def batches(splits: StreamSplits | DatasetSplits, epoch: int, *, split: str = "train", train: bool = True,
            seed: int = 1, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(splits.loader(split, 8, train=train, seed=seed).batches(epoch, start))


Batch = tuple[torch.Tensor, torch.Tensor]


def assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_streamed_splits_and_batch_order_are_the_in_memory_loaders(root):
    stream = load_training_data(config(root))
    memory = load_dataset(config(root, stream=False))
    assert isinstance(stream, StreamSplits) and isinstance(memory, DatasetSplits)
    assert (len(stream.train), len(stream.val), len(stream.test)) == (18, 6, 6)
    assert stream.summary()["pipeline"] == "stream"
    for split in ("train", "val", "test"):  # the same files in each split, in the same order
        assert stream.split(split).labels.tolist() == memory.split(split).labels.tolist()
    got = [y.tolist() for _, y in batches(stream, 1)]
    assert got == [y.tolist() for _, y in batches(memory, 1)]
    assert sorted(sum(got, [])) != sum(got, [])  # shuffled
    images = batches(stream, 0)[0][0]
    assert images.shape == (8, 3, 32, 32) and abs(float(images.mean())) < 1.0  # normalized


def test_batches_depend_on_seed_and_epoch_only_whatever_the_workers(root):
    zero = load_training_data(config(root))
    two = load_training_data(config(root, workers=2))
    first = batches(zero, 0)
    assert_same(first, batches(zero, 0))
    loader = two.loader("train", 8, train=True, seed=1)  # persistent workers, several epochs
    assert_same(first, list(loader.batches(0)))
    assert_same(batches(zero, 1), list(loader.batches(1)))
    assert_same(batches(zero, 1)[1:], list(loader.batches(1, start=1)))  # a resumed epoch
    assert not torch.equal(first[0][0], batches(zero, 1)[0][0])
    assert not torch.equal(first[0][0], batches(zero, 0, seed=2)[0][0])
    assert_same(batches(zero, 0, split="val", train=False), batches(two, 0, split="val", train=False))


def test_ranks_under_torchrun_decode_their_contiguous_parts_of_every_global_batch(root):
    splits = load_training_data(config(root))
    for split, size, train in (("train", 8, True), ("test", 5, False)):  # 6 test images: 5 + 1
        whole = list(splits.loader(split, size, train=train, seed=3).batches(1))
        parts = [list(splits.loader(split, size, train=train, seed=3, shard=(rank, 3)).batches(1))
                 for rank in range(3)]
        for b, (images, labels) in enumerate(whole):
            shards = [part[b] for part in parts if b < len(part)]  # a rank with no image skips the batch
            assert torch.equal(torch.cat([x for x, _ in shards]), images)
            assert torch.equal(torch.cat([y for _, y in shards]), labels)
    assert [len(list(splits.loader("test", 5, shard=(r, 3)).batches(0))) for r in range(3)] == [2, 1, 1]


def test_auto_streams_a_folder_above_the_memory_threshold(root, monkeypatch):
    assert isinstance(load_training_data(config(root, stream=None)), DatasetSplits)
    monkeypatch.setattr(pipeline, "STREAM_ABOVE_BYTES", 30 * 3 * 32 * 32 - 1)  # 30 images at 32x32
    assert isinstance(load_training_data(config(root, stream=None)), StreamSplits)
    assert isinstance(load_training_data(config(root, stream=False)), DatasetSplits)


def test_a_folder_held_in_memory_is_listed_once(root, monkeypatch):
    listed: list[Path] = []
    real = folder.image_names
    monkeypatch.setattr(folder, "image_names", lambda where, at: listed.append(where) or real(where, at))
    assert isinstance(load_training_data(config(root, stream=None)), DatasetSplits)
    assert sorted(listed) == [root / "c0", root / "c1", root / "c2"]


def test_links_are_followed_anywhere_within_data_root(tmp_path):
    root = tmp_path / "data"
    write_folder(root / "train", classes=2, per_class=4)
    write_folder(root / "other", classes=1, per_class=1)
    (root / "val" / "c0").mkdir(parents=True)
    os.symlink(root / "other" / "c0" / "0.jpg", root / "val" / "c0" / "x.JPEG")  # an image from beside val/
    os.symlink(root / "train" / "c1", root / "val" / "c1")  # a class folder from train/
    for stream in (True, False):
        data = load_training_data(config(root, stream=stream, val_size=2))
        assert (len(data.train), len(data.test)) == (6, 5)


def test_random_resized_crop_draws_within_scale_and_ratio_and_falls_back_to_a_centre_crop():
    crop = RandomResizedCrop(32)
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = crop.box(400, 300, rng)
        assert 0 <= left <= 400 - w and 0 <= top <= 300 - h
        assert 0.08 * 0.9 <= w * h / 120_000 <= 1.0 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    assert crop.box(400, 10, rng) == (193, 0, 13, 10)  # too wide for any draw: centre, ratio 4/3
    gradient = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3))
    image = Image.fromarray(gradient)
    flipped = [crop(image, np.random.default_rng(s))[0, 0] for s in range(8)]  # rows of red
    assert {bool(row[0] > row[-1]) for row in flipped} == {True, False}  # both orientations drawn


def test_a_jpeg_is_decoded_at_a_reduced_scale_close_to_the_full_decode(tmp_path):
    smooth = np.linspace(0, 255, 640 * 480 * 3).reshape(480, 640, 3).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    crop = RandomResizedCrop(32, flip=False, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))
    with Image.open(tmp_path / "big.jpg") as image:
        fast = crop(image, np.random.default_rng(0))
        assert image.size == (80, 60)  # 1/8 of 640 x 480 still covers 32 x 32
    with Image.open(tmp_path / "big.jpg") as image:
        full = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    assert np.abs(fast.transpose(1, 2, 0).astype(int) - full).mean() < 3


def test_training_resumes_to_the_uninterrupted_weights(root, tmp_path):
    data = load_training_data(config(root))
    cfg = TrainConfig(steps=6, batch_size=6, optimizer="sgd", lr=0.05, warmup_epochs=0.5, progress=False,
                      eval_every=2, checkpoint_every=2, bn_recalibrate=1)

    def model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(from_string(TINY))

    reference = model(0)
    full = fit(reference, data, cfg, checkpoint_dir=tmp_path / "full")

    class Killed(Exception):
        pass

    def kill(step: int, _: object) -> None:
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        fit(model(0), data, cfg, checkpoint_dir=tmp_path / "cut", on_eval=kill)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 4
    resumed_model = model(7)
    resumed = fit(resumed_model, load_training_data(config(root, workers=2)), cfg,
                  checkpoint_dir=tmp_path / "cut", resume=True)
    assert resumed.steps == full.steps == 6
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[name]), name
    with pytest.raises(DataError, match="written for another run"):  # streamed and in-memory differ
        fit(model(0), load_dataset(config(root, stream=False)), cfg, checkpoint_dir=tmp_path / "cut",
            resume=True)


def test_mobilenas_train_streams_the_folder(root, tmp_path):
    from search.training_job import TrainOptions, prepare_job, run_training

    trainer = TrainConfig(steps=3, batch_size=6, optimizer="sgd", lr=0.05, progress=False, bn_recalibrate=1)
    options = TrainOptions(arch=TINY, data=config(root, workers=1), trainer=trainer)
    metrics = run_training(prepare_job(options, tmp_path / "run"))
    assert metrics["status"] == "completed" and metrics["budget"]["steps"] == 3
    assert metrics["data"]["pipeline"] == "stream" and metrics["data"]["train"] == 18
    saved = json.loads((tmp_path / "run" / "run_config.json").read_text())["data"]
    assert (saved["stream"], saved["workers"]) == (True, 1)
    assert (tmp_path / "run" / "weights.safetensors").is_file()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header states ``width`` x ``height`` (no pixel data: refused before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def one_line_error(cfg: DataConfig, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        for split in ("train", "val", "test"):
            batches(load_training_data(cfg), 0, split=split, train=split == "train")
    assert "\n" not in str(err.value)


def test_hostile_folders_are_refused_in_one_line(tmp_path, monkeypatch):
    outside = write_folder(tmp_path / "outside", classes=1, per_class=1) / "c0" / "0.jpg"
    root = write_folder(tmp_path / "data", classes=2, per_class=4)
    (root / "c0" / "notes.txt").write_text("not an image, not listed")
    os.symlink(root / "c1" / "1.png", root / "c0" / "inside.png")  # a link within the root is fine
    assert len(load_training_data(config(root, val_size=0, test_size=0)).train) == 9
    os.symlink(outside, root / "c0" / "escape.jpg")
    for stream in (True, False):
        one_line_error(config(root, stream=stream), r"escape.jpg: a symbolic link to .*outside the data ")
    os.symlink(outside.parent, root / "c2")
    with pytest.raises(DataError, match=r"c2: a symbolic link to .*outside the data folder"):
        load_training_data(config(root))
    (root / "c2").unlink()
    (root / "c0" / "escape.jpg").unlink()

    (root / "c1" / "huge.png").write_bytes(png_header(10_000, 8_000))
    whole = config(root, val_size=0, test_size=0)
    one_line_error(whole, r"huge.png: 10000 x 8000 = 80000000 pixels is above the limit")
    (root / "c1" / "huge.png").write_bytes(b"\x89PNG not really")
    one_line_error(whole, r"huge.png: not a readable image")
    (root / "c1" / "huge.png").unlink()
    monkeypatch.setattr(folder, "MAX_IMAGE_BYTES", 100)
    one_line_error(whole, r"bytes is above the limit of 100 bytes per image")


def test_bad_stream_options_name_the_field():
    with pytest.raises(DataError, match=r"data.stream: true streams image folders only \(data.name=folder\), "
                                         r"got data.name=cifar10; allowed: null, false"):
        DataConfig(name="cifar10", root="x", stream=True).validate()
    with pytest.raises(DataError, match=r"data.workers: must be in 0..64 or null \(automatic\), got -1"):
        DataConfig(workers=-1).validate()
    with pytest.raises(DataError, match=r"data.stream: true is for mobilenas train and reproduce action="):
        load_dataset(DataConfig(name="folder", root=".", stream=True))
