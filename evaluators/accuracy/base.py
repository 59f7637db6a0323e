"""What every accuracy evaluator shares: a spec in, an :class:`AccuracyResult` out (the protocol,
:class:`~evaluators.protocols.AccuracyEvaluator`, lives in :mod:`evaluators.protocols`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evaluators.training import COMPLETED
from search_spaces.builder import build_model
from search_spaces.errors import MobilenasError
from search_spaces.spec import ArchSpec

Report = Callable[[int, float, bool], None]
"""``report(step, value, last)``: an intermediate value for a pruner (e.g. ``optuna.Trial.report``
followed by a ``TrialPruned`` raise when it says so). ``last`` is True for the value at the end
of the budget: the candidate is fully evaluated then, and pruning it would only drop it from the
ranking. Exceptions it raises propagate."""


@dataclass(frozen=True)
class AccuracyResult:
    """What an accuracy evaluator says about one network.

    ``accuracy``: for proxy training, validation top-1 as a fraction in [0, 1] (0.0 when the
    run diverged); for training-free estimators, a ranking score on the evaluator's own scale
    (higher is better; see the evaluator's ``unit``), not an accuracy.
    ``status``: ``completed`` or ``diverged`` (NaN/inf loss, or a non-finite score).
    """

    accuracy: float
    seconds: float
    status: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED


class SpecEvaluator:
    """Common part: check the spec fits the data, build it with a fixed seed, time the call."""

    name = "accuracy"
    unit = "top-1"

    def __init__(self, *, num_classes: int, in_channels: int, seed: int) -> None:
        self.num_classes, self.in_channels, self.seed = num_classes, in_channels, seed

    def build(self, spec: ArchSpec) -> nn.Module:
        if spec.num_classes != self.num_classes or spec.in_channels != self.in_channels:
            raise MobilenasError(
                f"spec has {spec.num_classes} classes and {spec.in_channels} input channels, the data "
                f"{self.num_classes} and {self.in_channels}; build the space with "
                f"num_classes={self.num_classes}"
            )
        torch.manual_seed(self.seed)  # every candidate starts from the same random stream
        return build_model(spec)

    def evaluate(self, spec: ArchSpec, report: Report | None = None) -> AccuracyResult:
        started = time.perf_counter()
        result = self.evaluate_model(self.build(spec), report)
        return AccuracyResult(result.accuracy, time.perf_counter() - started, result.status, result.details)

    def __call__(self, spec: ArchSpec) -> float:
        return self.evaluate(spec).accuracy

    def evaluate_model(self, model: nn.Module, report: Report | None = None) -> AccuracyResult:
        raise NotImplementedError
