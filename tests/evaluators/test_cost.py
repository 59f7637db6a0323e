from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from evaluators.cost import count_cost, layer_costs
from search_spaces.builder import build_model, count_params
from search_spaces.reference import REFERENCE_PARAMS, reference_spec
from search_spaces.space import sample_specs


@pytest.mark.parametrize(
    "name, total_m, conv_linear_m",
    [("mobilenet_v3_large", 226.0, 216.6), ("mobilenet_v3_small", 59.6, 56.5)],
)
def test_reference_costs_match_the_public_implementation(name, total_m, conv_linear_m):
    cost = count_cost(reference_spec(name))
    assert cost.params == REFERENCE_PARAMS[name]
    assert round(cost.madds / 1e6, 1) == total_m
    assert round(cost.conv_linear_madds / 1e6, 1) == conv_linear_m


def test_costs_scale_with_resolution():
    spec = reference_spec("mobilenet_v3_small")
    small = count_cost(spec.replace(resolution=112))
    assert small.params == count_cost(spec).params
    assert small.madds < count_cost(spec).madds / 3


def test_the_sum_of_cached_layer_counts_is_fvcores_count_of_the_whole_network(space):
    for spec in [space.seed, *sample_specs(space, 2, seed=2)]:
        model = build_model(spec).eval()
        whole = FlopCountAnalysis(model, torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution))
        whole.unsupported_ops_warnings(False)
        whole.uncalled_modules_warnings(False)
        cost = count_cost(spec)
        assert cost.madds == whole.total() and cost.params == count_params(model)
        names = ["stem", *(f"blocks.{i}" for i in range(len(spec.blocks))), "head"]
        assert [m for _, m in layer_costs(spec)] == [whole.by_module()[name] for name in names]
