"""The standard ImageNet eval transform (resize shorter side, centre crop, mean/std), by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluators.data.imagenet_eval import EvalTransform, list_images, read_image
from search_spaces.errors import ConfigError, DataError

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def test_the_crop_and_normalization_match_a_hand_computation():
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)  # height 6, width 8
    # resize=6 keeps the shorter side: the resize is the identity; crop 4 starts at row 1, column 2
    out = EvalTransform(resize=6, crop=4)(Image.fromarray(pixels))
    want = (pixels[1:5, 2:6].astype(np.float32) / 255.0 - MEAN) / STD
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out.numpy(), want.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)


def test_the_shorter_side_goes_to_resize_and_the_longer_is_floored():
    transform = EvalTransform()
    assert transform.resized_size(300, 260) == (295, 256)  # int(256 * 300 / 260) = 295
    assert transform.resized_size(260, 300) == (256, 295)
    assert transform.resized_size(500, 375) == (341, 256)
    flat = Image.new("RGB", (300, 260), (200, 100, 50))
    out = transform(flat)
    assert out.shape == (3, 224, 224)
    want = (np.array([200, 100, 50], np.float32) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(out.mean((1, 2)).numpy(), want, rtol=1e-5)


def test_the_interpolation_is_the_one_asked_for():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (60, 50, 3), dtype=np.uint8))
    bilinear = EvalTransform(resize=32, crop=32, interpolation="bilinear")(image)
    bicubic = EvalTransform(resize=32, crop=32, interpolation="bicubic")(image)
    resized = np.asarray(image.resize((32, 38), Image.Resampling.BICUBIC), np.float32)[3:35]
    want = ((resized / 255.0 - MEAN) / STD).transpose(2, 0, 1)  # 50x60 -> 32x38, rows 3..34
    np.testing.assert_allclose(bicubic.numpy(), want, atol=1e-5)
    assert float((bilinear - bicubic).abs().max()) > 0.01
    with pytest.raises(ConfigError, match="evaluate.interpolation: 'nearest' is not one of auto, bilinear"):
        EvalTransform(interpolation="nearest").validate()


def test_labels_are_the_sorted_class_folders_and_bad_images_are_refused(tmp_path):
    for name in ("n03", "n01", "n02"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (10, 10)).save(tmp_path / name / "a.png")
    (tmp_path / "n02" / "notes.txt").write_text("not an image")
    items, classes = list_images(tmp_path)
    assert classes == ["n01", "n02", "n03"]
    assert [(p.parent.name, label) for p, label in items] == [("n01", 0), ("n02", 1), ("n03", 2)]
    broken = tmp_path / "n01" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        read_image(broken, EvalTransform())
