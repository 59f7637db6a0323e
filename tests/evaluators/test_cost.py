from __future__ import annotations

import pytest

from evaluators.cost import count_cost, layer_costs
from search_spaces.reference import REFERENCE_PARAMS, reference_spec


@pytest.mark.parametrize(
    "name, total_m, conv_linear_m",
    [("mobilenet_v3_large", 226.0, 216.6), ("mobilenet_v3_small", 59.6, 56.5)],
)
def test_reference_costs_match_the_public_implementation(name, total_m, conv_linear_m):
    cost = count_cost(reference_spec(name))
    assert cost.params == REFERENCE_PARAMS[name]
    assert round(cost.madds / 1e6, 1) == total_m
    assert round(cost.conv_linear_madds / 1e6, 1) == conv_linear_m


def test_costs_scale_with_resolution_and_layers_sum_to_total():
    spec = reference_spec("mobilenet_v3_small")
    small = count_cost(spec.replace(resolution=112))
    assert small.params == count_cost(spec).params
    assert small.madds < count_cost(spec).madds / 3
    per_layer = layer_costs(spec)
    assert sum(p for p, _ in per_layer) == count_cost(spec).params
    assert sum(m for _, m in per_layer) == count_cost(spec).madds
