from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces.blocks import InvertedResidual, SqueezeExcite
from search_spaces.builder import build_model, count_params
from search_spaces.reference import REFERENCE_PARAMS, REFERENCES, reference_spec
from search_spaces.space import sample_specs
from search_spaces.spec import make_divisible


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_parameter_counts_are_exact(name):
    assert count_params(build_model(reference_spec(name))) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", REFERENCES)
@pytest.mark.parametrize("width", [0.75, 1.25])
def test_width_multiplier_scales_params(name, width):
    base = count_params(build_model(reference_spec(name)))
    scaled = count_params(build_model(reference_spec(name, width_mult=width)))
    assert (scaled < base) if width < 1 else (scaled > base)
    spec = reference_spec(name, width_mult=width)
    assert all(b.out % 8 == 0 and b.exp % 8 == 0 for b in spec.blocks)


def forward_backward(spec, batch=2):
    torch.manual_seed(0)
    model = build_model(spec).train()
    x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution)
    out = model(x)
    assert out.shape == (batch, spec.num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_sampled_specs_train_step_at_32(space):
    for spec in sample_specs(space, 6, seed=3):
        forward_backward(spec)


def test_sampled_specs_train_step_at_224(space):
    for spec in sample_specs(space, 2, seed=4):
        forward_backward(spec.replace(resolution=224), batch=2)


@pytest.mark.parametrize("resolution", [32, 33, 57, 96])
def test_any_resolution_from_32(resolution):
    forward_backward(reference_spec("mobilenet_v3_small", num_classes=7, resolution=resolution))


def test_residual_and_expansion_rules_follow_the_spec():
    spec = reference_spec("mobilenet_v3_large")
    model = build_model(spec)
    for block_spec, in_chs, block in zip(spec.blocks, spec.block_inputs(), model.blocks):
        assert isinstance(block, InvertedResidual)
        assert block.use_residual == (block_spec.stride == 1 and in_chs == block_spec.out)
        assert isinstance(block.expand, nn.Identity) == (block_spec.exp == in_chs)
        assert isinstance(block.se, SqueezeExcite) == block_spec.se
        if block_spec.se:
            assert block.se.reduce.out_channels == make_divisible(block_spec.exp / 4, 8)
        assert len(block.project) == 2  # linear bottleneck: conv + BN, no activation
    # the first Large block has exp == in (16): no expansion conv; residual (16 -> 16, stride 1)
    assert isinstance(model.blocks[0].expand, nn.Identity) and model.blocks[0].use_residual
    assert not model.blocks[1].use_residual  # stride 2


def test_residual_adds_the_input():
    block = InvertedResidual(16, 32, 16, kernel=3, stride=1, se=True, act="HS").eval()
    nn.init.zeros_(block.project[1].weight)  # projection BN outputs zero -> block is identity
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(block(x), x)


def test_initialization_matches_reference_recipe():
    model = build_model(reference_spec("mobilenet_v3_small"))
    assert torch.all(model.head.classifier.bias == 0)
    assert model.head.classifier.weight.std().item() == pytest.approx(0.01, rel=0.1)
    bn = model.stem[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert bn.eps == 0.001 and bn.momentum == 0.01
