"""The weight-sharing supernet: extraction equality, forward/backward of sampled sub-networks,
kernel transformations, channel sorting, the space's corners."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from evaluators.supernet import SuperNet
from evaluators.training.metrics import recalibrate_batchnorm
from search_spaces.config import SpaceConfig, build_space
from search_spaces.errors import SpecError
from search_spaces.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

CONF = Path(__file__).resolve().parents[2] / "conf" / "space"


def conf_space(name: str, resolution: int = 32) -> SearchSpace:
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SpaceConfig), OmegaConf.load(CONF / name)))
    return build_space(cfg, num_classes=10, resolution=resolution)


def randomized(space: SearchSpace, seed: int = 0) -> SuperNet:
    """A supernet whose affine weights, kernel transformations, classifier and batch-norm statistics
    (measured on the largest sub-network, then jittered) are far from their initial values, so that a
    wrong slice or a skipped rule shows in the logits."""
    torch.manual_seed(seed)
    net = SuperNet(space)
    with torch.no_grad():
        for name, tensor in net.named_parameters():
            if name.endswith("bias"):
                tensor.normal_(0, 0.2)
            elif ".transforms." in name:
                tensor.add_(torch.randn_like(tensor) * 0.1)
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.normal_(1.0, 0.2)
        net.head.classifier.weight.normal_(0, 0.05)
        net.set_active(net.largest())
        recalibrate_batchnorm(net, [(torch.randn(8, 3, 32, 32), None)])
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.add_(torch.randn_like(bn.running_mean) * 0.1 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
    return net.eval()


@pytest.fixture(scope="module", params=["v3_large.yaml", "v3_small.yaml"])
def net(request: pytest.FixtureRequest) -> SuperNet:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures start before the function-scoped ``one_thread``
    try:
        return randomized(conf_space(request.param))
    finally:
        torch.set_num_threads(threads)


def test_extracted_subnetworks_compute_what_the_supernet_computes(net):
    rng = random.Random(1)
    specs = [net.largest(), net.smallest(), net.space.seed] + [net.sample(rng) for _ in range(4)]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for spec in specs:
            expected = net.forward_spec(x, spec)
            extracted = net.extract(spec)
            assert not extracted.training and extracted.spec == spec
            actual = extracted(x)
            assert (expected[0] - expected[1]).abs().max() > 0.1  # the logits depend on the input
            assert (actual - expected).abs().max() <= 1e-5, str(spec)


def test_every_sampled_spec_runs_forward_and_backward(net):
    rng = random.Random(2)
    x = torch.randn(2, 3, 32, 32)
    net.train()
    try:
        for _ in range(3):
            spec = net.sample(rng)
            assert net.space.contains(spec)
            net.zero_grad(set_to_none=True)
            logits = net.forward_spec(x, spec)
            assert logits.shape == (2, 10)
            logits.square().mean().backward()
            assert net.stem[0].weight.grad is not None and torch.isfinite(net.stem[0].weight.grad).all()
            assert net.head.classifier.weight.grad.abs().sum() > 0
            # blocks beyond a stage's depth take no part
            stage = net.space.stages[0]
            depth = sum(1 for slot in net.plan(spec) if slot.stage == 0)
            for j in range(max(stage.depths)):
                used = net.stages[0][j].project.weight.grad is not None
                assert used == (j < depth)
    finally:
        net.eval()


def test_v3_small_supernet_runs_at_224():
    net = SuperNet(conf_space("v3_small.yaml", resolution=224))
    spec = net.sample(random.Random(3))
    logits = net.forward_spec(torch.randn(2, 3, 224, 224), spec)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert torch.isfinite(net.stem[0].weight.grad).all()


def _kernel3_spec(net: SuperNet):
    params = net.space.params_of(net.largest())
    params["s1.b0.kernel"] = 3
    return net.space.spec_from_params(params)


def _index_of_stage1_block0(net: SuperNet, spec) -> int:
    return next(i for i, slot in enumerate(net.plan(spec)) if (slot.stage, slot.index) == (1, 0))


def test_small_kernels_are_the_transformed_centre_of_the_largest():
    net = SuperNet(conf_space("v3_small.yaml"))
    spec = _kernel3_spec(net)
    i = _index_of_stage1_block0(net, spec)
    exp = spec.blocks[i].exp
    centre = net.stages[1][0].dw.conv.weight[:exp, :, 2:5, 2:5]
    assert torch.equal(net.extract(spec).blocks[i].dw[0].weight, centre)  # identity at initialisation
    # training a 3x3 sub-network trains its transformation matrices
    net.forward_spec(torch.randn(2, 3, 32, 32), spec).sum().backward()
    transforms = net.stages[1][0].dw.transforms
    assert transforms["7to5"].grad.abs().sum() > 0 and transforms["5to3"].grad.abs().sum() > 0
    with torch.no_grad():
        transforms["5to3"].add_(torch.randn(9, 9) * 0.1)
    assert not torch.allclose(net.extract(spec).blocks[i].dw[0].weight, centre, atol=1e-3)


def test_sorting_channels_keeps_the_largest_function_and_sorts_by_importance():
    net = randomized(conf_space("v3_small.yaml"), seed=4)
    x = torch.randn(2, 3, 32, 32)
    smallest_before = net.forward_spec(x, net.smallest()).detach()
    before = net.forward_spec(x, net.largest()).detach()
    block = net.stages[2][1]
    assert net.sortable[2][1]
    weights = copy.deepcopy(block.state_dict())
    net.sort_channels()
    assert not torch.equal(block.expand.weight, weights["expand.weight"])
    importance = block.project.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])
    after = net.forward_spec(x, net.largest()).detach()
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()  # up to summation order
    # smaller expansions now keep other channels
    assert (net.forward_spec(x, net.smallest()).detach() - smallest_before).abs().max() > 1e-4


def test_blocks_that_may_skip_expansion_are_not_sorted():
    net = SuperNet(conf_space("v3_large.yaml"))
    # V3-Large's first block: stem 16 channels, expansion 16 at choice 1.0 -> no expansion conv
    assert not net.sortable[0][0]
    weight = net.stages[0][0].dw.conv.weight.clone()
    net.sort_channels()
    assert torch.equal(net.stages[0][0].dw.conv.weight, weight)


def test_corners_and_samples_of_the_space():
    net = SuperNet(conf_space("v3_small.yaml"))
    largest, smallest = net.largest(), net.smallest()
    assert len(largest.blocks) == sum(max(s.depths) for s in net.space.stages)
    assert len(smallest.blocks) == sum(min(s.depths) for s in net.space.stages)
    assert all(b.kernel == 7 and b.se for b in largest.blocks)
    assert all(b.kernel == 3 and not b.se for b in smallest.blocks)
    assert largest.param_count() > net.space.seed.param_count() > smallest.param_count()
    draws = [net.sample(random.Random(5)) for _ in range(2)]
    assert draws[0] == draws[1]
    many = {net.sample(random.Random(s)) for s in range(20)}
    assert len(many) == 20 and len({len(spec.blocks) for spec in many}) > 1


def test_a_spec_outside_the_space_is_refused():
    net = SuperNet(conf_space("v3_small.yaml"))
    spec = net.largest()
    wider = spec.with_blocks([spec.blocks[0].replace(out=spec.blocks[0].out + 8), *spec.blocks[1:]])
    with pytest.raises(SpecError):
        net.set_active(wider)
    assert net.active == spec


def test_deeper_sub_networks_start_as_their_shallowest_form():
    """BigNAS's init: every block after a stage's first starts as the identity (zero last batch-norm
    scale), so that the largest sub-network starts as shallow as the smallest and learns as fast."""
    space = conf_space("v3_small.yaml")
    torch.manual_seed(0)
    net = SuperNet(space).train()  # batch statistics: the initial running ones shrink the signal to ~1e-11
    net.head.dropout.eval()
    largest = net.largest()
    params = space.params_of(largest)
    params.update({f"s{stage.index}.depth": min(stage.depths) for stage in space.stages})
    shallow = space.spec_from_params(params)
    assert len(shallow.blocks) < len(largest.blocks) - 3
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        deep_logits, shallow_logits = net.forward_spec(x, largest), net.forward_spec(x, shallow)
        assert (deep_logits[0] - deep_logits[1]).abs().max() > 1e-4  # the logits depend on the input
        assert torch.allclose(deep_logits, shallow_logits, atol=1e-6)
        extracted = net.extract(largest)
        extracted.head.dropout.eval()
        assert torch.allclose(extracted(x), deep_logits, atol=1e-5)
