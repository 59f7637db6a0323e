"""The evaluator shapes the search layer relies on, as ``typing.Protocol`` classes.

The evaluators conform structurally: accuracy (:mod:`evaluators.accuracy`: proxy training and
the training-free scores), latency (:class:`~evaluators.latency.evaluator.LutLatency`,
:class:`~evaluators.latency.evaluator.MeasuredLatency`) and cost
(:func:`~evaluators.cost.count_cost`); the dry run's analytic stand-ins (:mod:`search.dry_run`) too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from search_spaces.spec import ArchSpec

if TYPE_CHECKING:  # annotations only: evaluators.accuracy imports this module
    from evaluators.accuracy.base import AccuracyResult, Report
    from evaluators.cost import Cost
    from evaluators.latency.protocol import LatencyProtocol


@runtime_checkable
class AccuracyEvaluator(Protocol):
    """Spec in, :class:`~evaluators.accuracy.base.AccuracyResult` out; ``report`` feeds a pruner.

    ``name`` names the evaluator, ``unit`` the scale of its ``accuracy`` (``top-1`` or a score)."""

    name: str
    unit: str

    def evaluate(self, spec: ArchSpec, report: Report | None = None) -> AccuracyResult: ...


@runtime_checkable
class LatencyEvaluator(Protocol):
    """Spec in, milliseconds out, under the stated ``protocol``; ``backend`` says how the figure is
    obtained (``lut``: predicted by a lookup table, ``measure``: timed end to end, ``analytic``)."""

    @property
    def protocol(self) -> LatencyProtocol: ...

    @property
    def backend(self) -> str: ...

    def __call__(self, spec: ArchSpec) -> float: ...

    def describe(self) -> str: ...


class CostEvaluator(Protocol):
    """Spec in, parameters and multiply-adds (:class:`~evaluators.cost.Cost`) out."""

    def __call__(self, spec: ArchSpec) -> Cost: ...
