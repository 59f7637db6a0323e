"""The latency evaluators a search calls: spec in, milliseconds out, under a stated protocol.

Both share the evaluator shape (``name``, ``unit``, ``__call__(spec) -> float``) and carry
their ``protocol``; ``backend`` says whether the figure is predicted by a lookup table
(``lut``) or measured end to end (``measure``).
"""

from __future__ import annotations

import logging
import threading

from evaluators.latency.fit import reference_fit_specs
from evaluators.latency.measure import check_measurable, measure_latency
from evaluators.latency.protocol import LatencyProtocol
from evaluators.latency.table import LatencyTable
from search_spaces.spec import ArchSpec

log = logging.getLogger(__name__)


class LutLatency:
    """Latency predicted by a :class:`LatencyTable` (missing rows measured on demand).

    With ``auto_fit``, a table without a fitted overhead gets one at the first call, from the
    MobileNetV3 references at four widths plus the first spec asked (a few seconds)."""

    name = "latency"
    unit = "ms"
    backend = "lut"

    def __init__(self, table: LatencyTable, *, auto_fit: bool = True, fit_rounds: int = 3) -> None:
        self.table = table
        self.auto_fit = auto_fit
        self.fit_rounds = fit_rounds
        self._fit_lock = threading.Lock()

    @property
    def protocol(self) -> LatencyProtocol:
        return self.table.protocol

    def __call__(self, spec: ArchSpec) -> float:
        if self.auto_fit and not self.table.fit.fitted and self.table.protocol.measurable:
            with self._fit_lock:
                if not self.table.fit.fitted:
                    self.fit_references(spec)
        return self.table.predict_ms(spec)

    def fit_references(self, spec: ArchSpec) -> None:
        """Fit the table's overhead on the V3 references at ``spec``'s classes and resolution."""
        specs = list(dict.fromkeys([*reference_fit_specs(spec), spec]))
        log.info("latency: fitting the overhead of %s on %d reference networks", self.table.path, len(specs))
        fit = self.table.fit_overhead(specs, rounds=self.fit_rounds)
        log.info(
            "latency: fit scale %.3f, overhead %.3f ms (rmse %.3f ms)",
            fit.scale,
            fit.overhead_ms,
            fit.rmse_ms or 0.0,
        )

    def describe(self) -> str:
        return f"lookup table {self.table.path} ({len(self.table)} rows): {self.protocol.describe()}"


class MeasuredLatency:
    """Latency measured end to end for every new spec (cached per spec).

    ``reference_ms``: the drift-correction unit; None calibrates one at the first measurement
    (pass it to other processes so that their figures are comparable)."""

    name = "latency"
    unit = "ms"
    backend = "measure"

    def __init__(self, protocol: LatencyProtocol, *, reference_ms: float | None = None) -> None:
        check_measurable(protocol)
        self.protocol = protocol
        self.reference_ms = reference_ms
        self._cache: dict[ArchSpec, float] = {}

    def __call__(self, spec: ArchSpec) -> float:
        ms = self._cache.get(spec)
        if ms is None:
            result = measure_latency(spec, self.protocol, reference_ms=self.reference_ms)
            self.reference_ms = result.reference_ms
            ms = self._cache[spec] = result.ms
        return ms

    def describe(self) -> str:
        return f"measured end to end: {self.protocol.describe()}"
