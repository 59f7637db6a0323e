"""``weights=<file>`` of show, export and train: published state_dicts mapped onto the architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evaluators.pretrained import timm_keys, timm_spec, torchvision_keys
from search.cli import main
from search_spaces.builder import build_model
from search_spaces.reference import reference_spec

pytestmark = pytest.mark.usefixtures("one_thread")
# timm mobilenetv3_small_*: stages of 1, 2, 3, 2, 3 bnecks, then the last 1x1 conv (blocks.5.0)
TIMM_SMALL_POSITIONS = [f"blocks.{s}.{i}" for s, n in enumerate((1, 2, 3, 2, 3, 1)) for i in range(n)]


def _source_state(mapping: dict[str, str], spec, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    ours = build_model(spec).state_dict()
    return {src: ours[dst].clone() for src, dst in mapping.items()}


@pytest.fixture(scope="module")
def torchvision_small(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    spec = reference_spec("mobilenet_v3_small")
    state = _source_state(torchvision_keys(spec), spec, seed=3)
    state["classifier.0.weight"] = state["classifier.0.weight"][:, :, 0, 0]  # torchvision's Linear
    path = tmp_path_factory.mktemp("tv") / "mobilenet_v3_small-047dcff4.pth"
    torch.save(state, path)
    return path, state


def test_show_names_the_source_and_the_tensor_count(torchvision_small, capsys):
    main(["show", "arch=mobilenet_v3_small", f"weights={torchvision_small[0]}"])
    assert f"weights: {torchvision_small[0]}: torchvision state_dict, all 244 tensors mapped" in \
        capsys.readouterr().out


def test_show_lays_timm_075_out_with_timms_widths(tmp_path, capsys):
    spec = timm_spec("mobilenet_v3_small", 0.75)
    path = tmp_path / "mobilenetv3_small_075.pth"
    torch.save(_source_state(timm_keys(spec, TIMM_SMALL_POSITIONS), spec, seed=4), path)
    main(["show", "arch=mobilenet_v3_small", "width_mult=0.75", f"weights={path}"])
    out = capsys.readouterr().out
    assert "timm state_dict, all 244 tensors mapped" in out
    assert "timm's own widths for mobilenet_v3_small x0.75" in out
    assert "ir_k3_e72_c24_s2_re" in out  # timm: make_divisible(16 * 4.5); the paper's multiplier gives e56


def test_export_writes_the_converted_weights(torchvision_small, tmp_path, capsys):
    path, state = torchvision_small
    main(["export", "arch=mobilenet_v3_small", f"weights={path}", f"out={tmp_path / 'exp'}", "onnx=false",
          "torchscript=false"])
    assert "trained;" in capsys.readouterr().out
    exported = load_file(str(tmp_path / "exp" / "weights.safetensors"))
    assert torch.equal(exported["blocks.3.dw.0.weight"], state["features.4.block.1.0.weight"])
    assert torch.equal(exported["head.hidden.weight"][:, :, 0, 0], state["classifier.0.weight"])


def test_train_starts_from_the_weights_with_a_new_classifier(torchvision_small, tmp_path, capsys):
    path, state = torchvision_small
    run_dir = tmp_path / "run"
    main(["train", "arch=mobilenet_v3_small", f"weights={path}", "data.num_classes=3", "data.train_size=30",
          "data.test_size=6", "data.val_size=6", "trainer.steps=1", "trainer.batch_size=8", "trainer.lr=1e-9",
          "trainer.progress=false", f"hydra.run.dir={run_dir}"])
    assert "all 244 tensors mapped (classifier not loaded: new classes)" in capsys.readouterr().out
    trained = load_file(str(run_dir / "weights.safetensors"))
    torch.testing.assert_close(trained["blocks.3.dw.0.weight"], state["features.4.block.1.0.weight"],
                               atol=1e-6, rtol=0)
    assert trained["head.classifier.weight"].shape == (3, 1024)
    assert json.loads((run_dir / "run_config.json").read_text())["weights"] == str(path)
