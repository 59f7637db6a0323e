"""Parameters and multiply-adds of a spec, counted by fvcore on its built layers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from fvcore.nn import FlopCountAnalysis

from search_spaces.builder import build_layer, count_params
from search_spaces.spec import ArchSpec, Layer

# Operators whose multiply-adds the papers count (fvcore's total also counts batch norm,
# pooling and the like).
_CONV_LINEAR = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")


@dataclass(frozen=True)
class Cost:
    """Counts for one spec at its own input resolution (batch 1)."""

    params: int
    madds: int  # everything fvcore counts
    conv_linear_madds: int  # convolutions and fully connected layers only

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def madds_m(self) -> float:
        return self.madds / 1e6


def _analyze(module: torch.nn.Module, input_shape: tuple[int, ...]) -> FlopCountAnalysis:
    """fvcore's count of ``module`` (eval mode) on a zero input of ``input_shape``, warnings off."""
    analysis = FlopCountAnalysis(module.eval(), torch.zeros(input_shape))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


@lru_cache(maxsize=65536)
def layer_cost(layer: Layer) -> Cost:
    """Params and MAdds of one layer at the shape it sees (cached: a space repeats its layers)."""
    module = build_layer(layer)
    analysis = _analyze(module, (1, layer.in_channels, layer.resolution, layer.resolution))
    conv_linear = sum(v for op, v in analysis.by_operator().items() if op.startswith(_CONV_LINEAR))
    return Cost(params=count_params(module), madds=int(analysis.total()), conv_linear_madds=int(conv_linear))


@lru_cache(maxsize=4096)
def count_cost(spec: ArchSpec) -> Cost:
    """Params and MAdds of ``spec``: the sum over its layers (stem, blocks, head), each counted by
    fvcore once per distinct layer; a search meets thousands of specs but far fewer layers, and the
    network's count is its layers' sum (tested against counting the whole network)."""
    costs = [layer_cost(layer) for layer in spec.layers()]
    return Cost(params=sum(c.params for c in costs), madds=sum(c.madds for c in costs),
                conv_linear_madds=sum(c.conv_linear_madds for c in costs))


def layer_costs(spec: ArchSpec) -> list[tuple[int, int]]:
    """(params, MAdds) of each layer (stem, blocks, head), in order."""
    return [(c.params, c.madds) for c in map(layer_cost, spec.layers())]
