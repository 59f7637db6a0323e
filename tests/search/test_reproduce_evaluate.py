"""``mobilenas reproduce action=evaluate``: published-style weights on a tiny ImageNet-style folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.data import DataConfig
from evaluators.pretrained import torchvision_keys
from search.cli import main
from search.evaluate_weights import EvaluateConfig, evaluate_weights
from search_spaces.builder import build_model
from search_spaces.errors import ConfigError, DataError
from search_spaces.reference import reference_spec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def val_dir(tmp_path_factory) -> Path:
    """3 synset folders (created out of order) x 2 images of 300x260."""
    root = tmp_path_factory.mktemp("val")
    rng = np.random.default_rng(0)
    for name in ("n03", "n01", "n02"):
        (root / name).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 256, (260, 300, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    return root


@pytest.fixture(scope="session")
def torchvision_file(tmp_path_factory) -> Path:
    """A torchvision-layout V3-Small state_dict for 1000 classes whose classifier ranks classes
    1 > 0 > 3, 4, 5 > ... > 2 whatever the image: top-1 hits n02's images, top-5 n01's and n02's."""
    spec = reference_spec("mobilenet_v3_small")
    ours = build_model(spec).state_dict()
    state = {src: ours[dst].clone() for src, dst in torchvision_keys(spec).items()}
    state["classifier.0.weight"] = state["classifier.0.weight"][:, :, 0, 0]
    state["classifier.3.weight"].zero_()
    bias = torch.zeros(1000)
    bias[[1, 0, 3, 4, 5, 2]] = torch.tensor([10.0, 9.0, 5.0, 5.0, 5.0, -10.0])
    state["classifier.3.bias"] = bias
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.pth"
    torch.save({"state_dict": state}, path)
    return path


def test_reproduce_evaluate_prints_top1_top5_beside_the_published_figures(val_dir, torchvision_file, tmp_path,
                                                                          capsys):
    main(["reproduce", "experiment=v3_small", "action=evaluate", "data=folder", f"data.root={val_dir}",
          f"weights={torchvision_file}", "evaluate.num_workers=2", "evaluate.batch_size=4",
          f"hydra.run.dir={tmp_path}"])
    out = capsys.readouterr().out
    assert f"weights: {torchvision_file}: torchvision state_dict, all 244 tensors mapped" in out
    assert "resize 256 (bilinear), centre crop 224" in out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if "  " in line}
    assert rows["measured: 6 images, 3 classes"][-2:] == ["33.333", "66.667"]
    assert rows["paper (Howard et al. 2019)"][-2:] == ["67.4", "-"]
    assert rows["torchvision IMAGENET1K_V1"][-2:] == ["67.668", "87.402"]
    record = json.loads((tmp_path / "evaluation.json").read_text())
    assert record["source"] == "torchvision" and record["images"] == 6
    assert record["transform"] == {"resize": 256, "crop": 224, "interpolation": "bilinear"}


def test_evaluate_needs_weights_and_a_folder_and_names_a_broken_image(val_dir, torchvision_file, tmp_path):
    folder = DataConfig(name="folder", root=str(val_dir))
    with pytest.raises(ConfigError, match="weights: action=evaluate needs weights=<file>"):
        evaluate_weights(EvaluateConfig(), None, folder, tmp_path, "mobilenet_v3_small")
    weights = str(torchvision_file)
    with pytest.raises(ConfigError, match="data: action=evaluate reads an ImageNet-style validation folder"):
        evaluate_weights(EvaluateConfig(), weights, DataConfig(), tmp_path, "mobilenet_v3_small")
    with pytest.raises(DataError, match=r"torchvision tensor features\.1\.block\.1\.fc1\.weight .* no place"):
        evaluate_weights(EvaluateConfig(), weights, folder, tmp_path, "mobilenet_v3_large")
    broken_root = tmp_path / "broken"
    (broken_root / "n01").mkdir(parents=True)
    (broken_root / "n01" / "x.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=r"x\.jpg: not a readable image") as err:  # raised in a worker
        evaluate_weights(EvaluateConfig(num_workers=1), weights,
                         DataConfig(name="folder", root=str(broken_root)), tmp_path, "mobilenet_v3_small")
    assert "\n" not in str(err.value)
