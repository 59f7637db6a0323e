"""NetAdapt proposals (pure spec logic) and weight inheritance."""

from __future__ import annotations

import pytest
import torch

from search.netadapt import bottleneck_groups, inherit_weights, kept_channels, propose
from search.netadapt.proposals import STEP, shrink_exp, shrink_group, structure
from search_spaces.blockstring import from_string
from search_spaces.builder import build_model
from search_spaces.errors import SpecError
from search_spaces.reference import reference_spec
from search_spaces.spec import ArchSpec, BlockSpec, StemSpec, make_divisible


def analytic_madds(spec: ArchSpec) -> float:
    """Conv and linear multiply-adds in millions: a fast, monotone stand-in for latency."""
    total = 0
    for layer in spec.layers():
        op, c, r_in, r_out = layer.op, layer.in_channels, layer.resolution, layer.out_resolution
        if isinstance(op, StemSpec):
            total += r_out**2 * op.kernel**2 * c * op.channels
        elif isinstance(op, BlockSpec):
            total += r_in**2 * c * op.exp if op.exp != c else 0
            total += r_out**2 * op.exp * (op.kernel**2 + op.out)
            total += 2 * op.exp * make_divisible(op.exp / 4, 8) if op.se else 0
        else:
            total += r_in**2 * c * op.channels + op.channels * op.hidden + op.hidden * layer.num_classes
    return total / 1e6


pytestmark = pytest.mark.usefixtures("one_thread")


SPECS = {
    "large": reference_spec("mobilenet_v3_large", num_classes=10, resolution=32),
    "small_w0.5": reference_spec("mobilenet_v3_small", width_mult=0.5, num_classes=10, resolution=32),
}


def randomized(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """A network with random batch-norm statistics too, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(spec)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_groups_of_v3_large_follow_residual_partners():
    groups = bottleneck_groups(SPECS["large"])
    assert [(g.stem, g.blocks, g.width) for g in groups] == [
        (True, (0,), 16), (False, (1, 2), 24), (False, (3, 4, 5), 40), (False, (6, 7, 8, 9), 80),
        (False, (10, 11), 112), (False, (12, 13, 14), 160)]
    assert groups[0].readers(15) == (0, 1) and groups[-1].readers(15) == (13, 14)


@pytest.mark.parametrize("name", SPECS)
def test_every_proposal_cuts_delta_with_the_widest_width_and_keeps_residuals(name):
    spec = SPECS[name]
    before = analytic_madds(spec)
    delta = 0.02 * before
    proposals = propose(spec, analytic_madds, delta)
    assert {p.kind for p in proposals} == {"exp", "bottleneck"}
    inputs = spec.block_inputs()
    x = torch.randn(1, 3, 32, 32)
    for p in proposals:
        assert p.latency_before_ms == before and p.latency_after_ms == analytic_madds(p.spec)
        assert p.latency_cut_ms >= delta
        assert p.new_channels % STEP == 0 and 8 <= p.new_channels < p.old_channels
        wider = p.new_channels + STEP
        if wider < p.old_channels:  # NetAdapt keeps the most channels that still cut delta
            if p.kind == "exp":
                wider_spec = shrink_exp(spec, p.blocks[0], wider)
            else:
                (group,) = [g for g in bottleneck_groups(spec) if (g.blocks, g.stem) == (p.blocks, p.stem)]
                wider_spec = shrink_group(spec, group, wider)
            assert structure(wider_spec) != structure(spec) or before - analytic_madds(wider_spec) < delta
        child_inputs = p.spec.block_inputs()
        for i, (old, new) in enumerate(zip(spec.blocks, p.spec.blocks)):
            assert old.has_residual(inputs[i]) == new.has_residual(child_inputs[i])
            assert old.has_expansion(inputs[i]) == new.has_expansion(child_inputs[i])
        assert build_model(p.spec).eval()(x).shape == (1, 10)


def test_exp_proposals_skip_blocks_without_expansion_conv():
    spec = SPECS["large"]  # block 0: exp 16 == in 16
    labels = [p.label for p in propose(spec, analytic_madds, 1e-6, kinds=["exp"])]
    assert all(p.startswith("exp") for p in labels)
    assert not any(" b0 " in p for p in labels) and any(" b1 " in p for p in labels)


def test_bottleneck_shrink_changes_the_group_and_its_readers_consistently():
    spec = SPECS["large"]
    (p,) = [p for p in propose(spec, analytic_madds, 1e-6, kinds=["bottleneck"]) if p.blocks == (3, 4, 5)]
    assert (p.old_channels, p.new_channels) == (40, 32)
    assert [b.out for b in p.spec.blocks[3:6]] == [32, 32, 32]
    assert [b.exp for b in p.spec.blocks[3:7]] == [72, 120, 120, 240]  # all have expansion convs
    (stem,) = [p for p in propose(spec, analytic_madds, 1e-6, kinds=["bottleneck"]) if p.stem]
    assert stem.spec.stem.channels == 8 and stem.spec.blocks[0].exp == 8 and stem.spec.blocks[0].out == 8


def test_widths_that_would_change_the_structure_are_skipped():
    spec = from_string("in_r32_c3 stem_k3_c16_s2_hs ir_k3_e24_c16_s1_re ir_k3_e32_c24_s2_re "
                       "head_c32_h64_hs_n10")
    (p,) = propose(spec, lambda s: float(s.blocks[0].exp), 1.0, kinds=["exp"])
    assert p.new_channels == 8  # 16 would equal the input width and drop the expansion conv
    assert propose(spec, lambda s: 1.0, 1e-3) == []  # nothing cuts latency: no proposal


def test_propose_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kinds: \\['depth'\\] not allowed"):
        propose(SPECS["large"], analytic_madds, 0.1, kinds=["depth"])
    with pytest.raises(ValueError, match="delta_ms must be > 0"):
        propose(SPECS["large"], analytic_madds, 0.0)


@pytest.mark.parametrize("name", SPECS)
def test_unchanged_child_equals_parent(name):
    parent = randomized(SPECS[name])
    child = inherit_weights(parent, SPECS[name])
    x = torch.randn(2, 3, 32, 32)
    assert not child.training
    assert torch.equal(parent(x), child(x))
    for (k, a), (_, b) in zip(parent.state_dict().items(), child.state_dict().items()):
        assert torch.equal(a, b), k


def test_exp_shrink_keeps_the_top_l1_channels_everywhere_they_appear():
    spec = SPECS["large"]
    parent = randomized(spec)
    (p,) = [p for p in propose(spec, analytic_madds, 1e-6, kinds=["exp"]) if p.blocks == (4,)]  # SE block
    child = inherit_weights(parent, p.spec)
    pb, cb = parent.blocks[4], child.blocks[4]
    l1 = pb.expand[0].weight.abs().sum(dim=(1, 2, 3))
    keep = torch.topk(l1, p.new_channels).indices.sort().values
    squeeze = make_divisible(p.new_channels / 4, 8)
    q = torch.topk(pb.se.reduce.weight.abs().sum(dim=(1, 2, 3)), squeeze).indices.sort().values
    assert torch.equal(cb.expand[0].weight, pb.expand[0].weight[keep])
    assert torch.equal(cb.expand[1].running_var, pb.expand[1].running_var[keep])
    assert torch.equal(cb.dw[0].weight, pb.dw[0].weight[keep])
    assert torch.equal(cb.dw[1].bias, pb.dw[1].bias[keep])
    assert torch.equal(cb.se.reduce.weight, pb.se.reduce.weight[q][:, keep])
    assert torch.equal(cb.se.expand.weight, pb.se.expand.weight[keep][:, q])
    assert torch.equal(cb.se.expand.bias, pb.se.expand.bias[keep])
    assert torch.equal(cb.project[0].weight, pb.project[0].weight[:, keep])
    assert torch.equal(cb.project[1].running_mean, pb.project[1].running_mean)
    for i in (3, 5):  # other blocks are copied exactly
        kept = child.blocks[i].state_dict()
        for k, a in parent.blocks[i].state_dict().items():
            assert torch.equal(a, kept[k]), k
    assert child(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_bottleneck_shrink_keeps_the_same_channels_across_the_group_and_its_readers():
    spec = SPECS["large"]
    parent = randomized(spec)
    proposals = propose(spec, analytic_madds, 1e-6, kinds=["bottleneck"])
    (stem_p,) = [p for p in proposals if p.stem]  # stem + block 0 (no expansion conv), 16 -> 8
    child = inherit_weights(parent, stem_p.spec)
    l1 = sum(conv.weight.abs().sum(dim=(1, 2, 3)) for conv in (parent.stem[0], parent.blocks[0].project[0]))
    keep = torch.topk(l1, 8).indices.sort().values
    assert torch.equal(kept_channels(parent, stem_p.spec)["g0"], keep)
    assert torch.equal(child.stem[0].weight, parent.stem[0].weight[keep])
    assert torch.equal(child.blocks[0].dw[0].weight, parent.blocks[0].dw[0].weight[keep])
    assert torch.equal(child.blocks[0].project[0].weight, parent.blocks[0].project[0].weight[keep][:, keep])
    assert torch.equal(child.blocks[1].expand[0].weight, parent.blocks[1].expand[0].weight[:, keep])
    assert torch.equal(child.blocks[1].dw[0].weight, parent.blocks[1].dw[0].weight)

    (last,) = [p for p in proposals if p.blocks == (12, 13, 14)]  # last group feeds the head
    child = inherit_weights(parent, last.spec)
    l1 = sum(parent.blocks[i].project[0].weight.abs().sum(dim=(1, 2, 3)) for i in (12, 13, 14))
    keep = torch.topk(l1, last.new_channels).indices.sort().values
    for i in (12, 13, 14):
        assert torch.equal(child.blocks[i].project[0].weight, parent.blocks[i].project[0].weight[keep])
    for i in (13, 14):
        assert torch.equal(child.blocks[i].expand[0].weight, parent.blocks[i].expand[0].weight[:, keep])
    assert torch.equal(child.head.conv[0].weight, parent.head.conv[0].weight[:, keep])
    assert torch.equal(child.head.classifier.weight, parent.head.classifier.weight)
    assert child(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_inheritance_refuses_children_that_are_not_truncations():
    spec = SPECS["small_w0.5"]
    parent = randomized(spec)
    blocks = list(spec.blocks)
    blocks[1] = blocks[1].replace(exp=blocks[1].exp + 8)
    wider = spec.with_blocks(blocks)
    with pytest.raises(SpecError, match="child width 48 exceeds the parent's 40"):
        inherit_weights(parent, wider)
    other_kernel = spec.with_blocks([spec.blocks[0].replace(kernel=5), *spec.blocks[1:]])
    with pytest.raises(SpecError, match="channel widths only"):
        inherit_weights(parent, other_kernel)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_inheritance_keeps_the_parents_device():
    spec = SPECS["small_w0.5"]
    parent = randomized(spec).cuda()
    (p,) = propose(spec, analytic_madds, 1e-6, kinds=["bottleneck"])[-1:]
    child = inherit_weights(parent, p.spec)
    assert next(child.parameters()).is_cuda
    x = torch.randn(2, 3, 32, 32, device="cuda")
    assert torch.equal(inherit_weights(parent, spec)(x), parent(x)) and child(x).shape == (2, 10)
