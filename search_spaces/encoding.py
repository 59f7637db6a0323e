"""A fixed-length numeric encoding of the specs of one space (for accuracy predictors).

Each choice of the space becomes a one-hot group, in a stable order: per stage its depth and
width, then per block slot (up to the stage's deepest choice) kernel, expansion, SE and
activation. A block slot beyond the spec's depth is all zeros, so every spec of the space has
the same length and two specs share a coordinate exactly when they share that choice (OFA's
accuracy predictor uses this encoding)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec


@dataclass(frozen=True)
class SpecEncoding:
    """The one-hot layout of ``space``: ``groups`` lists (parameter name, its choices)."""

    space: SearchSpace

    @cached_property
    def groups(self) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        space = self.space
        groups: list[tuple[str, tuple[Any, ...]]] = []
        for stage in space.stages:
            prefix = f"s{stage.index}"
            groups += [(f"{prefix}.depth", stage.depths), (f"{prefix}.width", space.widths)]
            for j in range(max(stage.depths)):
                name = f"{prefix}.b{j}"
                groups += [(f"{name}.kernel", space.kernels), (f"{name}.exp", space.expansions),
                           (f"{name}.se", space.se), (f"{name}.act", space.acts)]
        return tuple(groups)

    @cached_property
    def size(self) -> int:
        """Length of an encoded spec."""
        return sum(len(choices) for _, choices in self.groups)

    def encode_params(self, params: dict[str, Any]) -> np.ndarray:
        """The encoding of a spec given by its space parameters (as Optuna stores them)."""
        vector = np.zeros(self.size, dtype=np.float32)
        offset = 0
        for name, choices in self.groups:
            if name in params:
                vector[offset + choices.index(params[name])] = 1.0
            offset += len(choices)
        return vector

    def encode(self, spec: ArchSpec) -> np.ndarray:
        """The encoding of ``spec``; :class:`SpecError` when it is not in the space."""
        return self.encode_params(self.space.params_of(spec))

    def encode_many(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """Encodings of ``specs`` as rows of one float32 matrix."""
        if not specs:
            return np.zeros((0, self.size), dtype=np.float32)
        return np.stack([self.encode(spec) for spec in specs])
