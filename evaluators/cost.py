"""Parameters and multiply-adds of a spec, counted by fvcore on the built network."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from fvcore.nn import FlopCountAnalysis

from search_spaces.builder import build_model, count_params
from search_spaces.spec import ArchSpec

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


def _analyze(spec: ArchSpec) -> tuple[torch.nn.Module, FlopCountAnalysis]:
    """``spec`` built in eval mode and fvcore's count of it on a zero input (batch 1), warnings off."""
    model = build_model(spec).eval()
    inputs = torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution)
    analysis = FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return model, analysis


@lru_cache(maxsize=4096)
def count_cost(spec: ArchSpec) -> Cost:
    """Params and MAdds of ``spec`` (cached: specs are hashable)."""
    model, analysis = _analyze(spec)
    by_operator = analysis.by_operator()
    conv_linear = sum(v for op, v in by_operator.items() if op.startswith(_CONV_LINEAR))
    return Cost(params=count_params(model), madds=int(analysis.total()), conv_linear_madds=int(conv_linear))


def layer_costs(spec: ArchSpec) -> list[tuple[int, int]]:
    """(params, MAdds) of each layer (stem, blocks, head), in order."""
    model, analysis = _analyze(spec)
    by_module = analysis.by_module()
    names = ["stem"] + [f"blocks.{i}" for i in range(len(spec.blocks))] + ["head"]
    modules = dict(model.named_modules())
    return [(count_params(modules[n]), int(by_module.get(n, 0))) for n in names]
