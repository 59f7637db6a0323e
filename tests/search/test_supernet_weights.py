"""``weights=<supernet run dir>``: a winner starts from its sub-network's weights (export, train)."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from evaluators.supernet import SuperNet, save_supernet
from search.cli import main
from search.weights import supernet_weights

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def supernet(tiny_space, tiny_data_config, tmp_path_factory):
    torch.manual_seed(0)
    net = SuperNet(tiny_space)
    run = tmp_path_factory.mktemp("supernet")
    save_supernet(run, net, record={"data": asdict(tiny_data_config)})
    return run, net


def test_export_writes_the_sub_networks_weights_with_its_own_batch_norm_statistics(
        supernet, tmp_path, capsys):
    run, net = supernet
    spec = net.smallest()
    main(["export", f"arch={spec}", f"weights={run}", f"out={tmp_path / 'exp'}", "onnx=false",
          "torchscript=false"])
    assert "extracted from the supernet" in capsys.readouterr().out
    exported = load_file(str(tmp_path / "exp" / "weights.safetensors"))
    card = (tmp_path / "exp" / "MODEL_CARD.md").read_text()
    assert f"weights from {run} (the sub-network's weights, extracted from the supernet)" in card
    expected = supernet_weights(run, spec)
    assert all(torch.equal(exported[key], value) for key, value in expected.items())
    shared = net.eval().extract(spec).state_dict()  # the statistics the supernet happens to hold
    assert torch.equal(exported["blocks.0.dw.0.weight"], shared["blocks.0.dw.0.weight"])
    assert not torch.equal(exported["blocks.0.dw.1.running_var"], shared["blocks.0.dw.1.running_var"])


def test_an_architecture_outside_the_supernets_space_is_one_line(supernet, tmp_path, capsys):
    run, net = supernet
    outside = net.largest().replace(num_classes=7)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", f"arch={outside}", f"weights={run}", f"out={tmp_path / 'exp'}"])
    assert exit_info.value.code == 2
    assert "is not an architecture of this supernet's space" in capsys.readouterr().err
