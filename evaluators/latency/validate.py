"""How well a lookup table predicts whole networks: sample specs from a space, measure them end
to end (interleaved rounds, robust to load from other processes), compare with the table.

Figures: MAPE, the fraction of specs within +-10% (nn-Meter's accuracy measure), Spearman's
rank correlation (what a search needs: the right order), and a predicted-vs-measured plot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from evaluators.latency.fit import OverheadFit, fit_scale_overhead, reference_fit_specs
from evaluators.latency.protocol import LatencyProtocol
from evaluators.latency.table import LatencyTable
from search_spaces.errors import LatencyError
from search_spaces.serialize import atomic_write
from search_spaces.space import SearchSpace, sample_specs
from search_spaces.spec import ArchSpec


def space_fit_specs(space: SearchSpace, n: int, *, seed: int = 0) -> list[ArchSpec]:
    """The networks a table's overhead is fitted on: the space's seed, ``n - 1`` samples of the
    space (drawn with ``seed + 1``, so none is a validation sample drawn with ``seed``) and the
    V3 references at four widths, which spread the latencies wide enough to pin the slope
    down. Empty when ``n`` is 0."""
    if n <= 0:
        return []
    first = space.seed
    samples = sample_specs(space, n - 1, seed=seed + 1, exclude=[first])
    return list(dict.fromkeys([first, *samples, *reference_fit_specs(first)]))


@dataclass(frozen=True)
class ValidationReport:
    """Predicted and measured latencies of ``specs`` (spec strings) under ``protocol``.

    ``fit`` made ``predicted_ms``: the table's stored fit (``fit_source="table"``) or one
    fitted on other networks timed in the same session as ``specs`` (``"session"``); then
    ``table_fit`` and ``table_predicted_ms`` hold the stored fit and its predictions as well."""

    protocol: LatencyProtocol
    fit: OverheadFit
    specs: tuple[str, ...]
    predicted_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    measured_iqr_ms: tuple[float, ...]
    seconds: float
    fit_source: str = "table"
    table_fit: OverheadFit | None = None
    table_predicted_ms: tuple[float, ...] = ()

    @property
    def relative_errors(self) -> np.ndarray:
        predicted, measured = np.asarray(self.predicted_ms), np.asarray(self.measured_ms)
        return (predicted - measured) / measured

    @property
    def mape(self) -> float:
        """Mean absolute percentage error, as a fraction."""
        return float(np.mean(np.abs(self.relative_errors)))

    @property
    def within_10(self) -> float:
        """Fraction of specs predicted within +-10% of their measured latency."""
        return float(np.mean(np.abs(self.relative_errors) <= 0.10))

    @property
    def max_error(self) -> float:
        return float(np.max(np.abs(self.relative_errors)))

    @property
    def spearman(self) -> float:
        if len(self.specs) < 2:
            return float("nan")
        return float(spearmanr(self.predicted_ms, self.measured_ms)[0])

    def summary(self) -> str:
        return (
            f"{len(self.specs)} specs: MAPE {self.mape:.1%}, within +-10% {self.within_10:.0%}, "
            f"max error {self.max_error:.1%}, Spearman {self.spearman:.3f}; measured "
            f"{min(self.measured_ms):.2f}-{max(self.measured_ms):.2f} ms"
        )

    def table_fit_report(self) -> ValidationReport | None:
        """The same comparison with the table's stored fit (None when that is what ``fit`` is)."""
        if self.table_fit is None:
            return None
        return replace(
            self,
            fit=self.table_fit,
            predicted_ms=self.table_predicted_ms,
            fit_source="table",
            table_fit=None,
            table_predicted_ms=(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol.to_dict(),
            "fit": self.fit.to_dict(),
            "fit_source": self.fit_source,
            "n": len(self.specs),
            "mape": self.mape,
            "within_10": self.within_10,
            "max_error": self.max_error,
            "spearman": self.spearman,
            "seconds": self.seconds,
            **({"table_fit": report.to_dict()} if (report := self.table_fit_report()) is not None else {}),
            "specs": [
                {"spec": s, "predicted_ms": p, "measured_ms": m, "measured_iqr_ms": q}
                for s, p, m, q in zip(
                    self.specs, self.predicted_ms, self.measured_ms, self.measured_iqr_ms, strict=True
                )
            ],
        }


def validate_table(
    table: LatencyTable,
    specs: Sequence[ArchSpec],
    *,
    fit_specs: Sequence[ArchSpec] = (),
    rounds: int = 10,
    progress: bool = True,
) -> ValidationReport:
    """Predict each spec from ``table`` (measuring missing rows), then measure each end to end
    in ``rounds`` interleaved rounds, and compare.

    With ``fit_specs`` (networks other than ``specs``), those are timed in the same interleaved
    rounds and the scale and overhead are fitted on them: the comparison then tests the rows,
    not how far the machine's speed has moved since the table's fit was measured (a few
    percent over minutes on shared CPUs, even drift-corrected). The stored fit's figures are
    kept in the report; the table is not changed."""
    specs = list(dict.fromkeys(specs))
    if not specs:
        raise LatencyError("validation needs at least one spec")
    validated = set(specs)
    fit_specs = [s for s in dict.fromkeys(fit_specs) if s not in validated]
    start = time.perf_counter()
    table.build([layer for spec in [*specs, *fit_specs] for layer in spec.layers()], progress=progress)
    stored = [table.predict_ms(spec) for spec in specs]
    results = table.measure([*specs, *fit_specs], rounds=rounds, progress=progress, desc="timing networks")
    measured, fit_measured = results[: len(specs)], results[len(specs) :]
    fit, predicted, source = table.fit, stored, "table"
    if fit_specs:
        fit = fit_scale_overhead([table.sum_ms(s) for s in fit_specs], [r.ms for r in fit_measured])
        predicted, source = [fit.apply(table.sum_ms(spec)) for spec in specs], "session"
    return ValidationReport(
        protocol=table.protocol,
        fit=fit,
        specs=tuple(str(s) for s in specs),
        predicted_ms=tuple(predicted),
        measured_ms=tuple(r.ms for r in measured),
        measured_iqr_ms=tuple(r.iqr_ms for r in measured),
        seconds=time.perf_counter() - start,
        fit_source=source,
        table_fit=table.fit if fit_specs else None,
        table_predicted_ms=tuple(stored) if fit_specs else (),
    )


def plot_validation(report: ValidationReport, path: str | os.PathLike[str]) -> Path:
    """Scatter of predicted vs measured latency with the y = x line and the +-10% band (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured, predicted = np.asarray(report.measured_ms), np.asarray(report.predicted_ms)
    low, high = 0.9 * min(measured.min(), predicted.min()), 1.1 * max(measured.max(), predicted.max())
    figure = Figure(figsize=(5.5, 5.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    line = np.array([low, high])
    axes.plot(line, line, color="black", linewidth=1, label="predicted = measured")
    axes.fill_between(line, 0.9 * line, 1.1 * line, color="tab:blue", alpha=0.12, label="+-10%")
    axes.errorbar(
        measured,
        predicted,
        xerr=np.asarray(report.measured_iqr_ms) / 2,
        fmt="o",
        markersize=4,
        color="tab:orange",
        ecolor="tab:gray",
        elinewidth=0.8,
        label="spec (IQR of runs)",
    )
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("measured latency (ms)")
    axes.set_ylabel("predicted latency (ms, lookup table)")
    p = report.protocol
    axes.set_title(
        f"{len(report.specs)} specs: MAPE {report.mape:.1%}, within 10% {report.within_10:.0%}, "
        f"Spearman {report.spearman:.3f}\n{p.device}, {p.threads} thread(s), batch {p.batch_size}, "
        f"{p.resolution}x{p.resolution}, {p.statistic} of {p.runs}, {p.timer} timer"
        f"{', drift-corrected' if p.drift_correction == 'reference' else ''}, {report.fit_source} fit",
        fontsize=9,
    )
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
