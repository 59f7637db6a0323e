"""How well a lookup table predicts whole networks: sample specs from a space, measure them end
to end (interleaved rounds, robust to load from other processes), compare with the table.

Figures: MAPE, the fraction of specs within +-10% (nn-Meter's accuracy measure), Spearman's
rank correlation (what a search needs: the right order), and a predicted-vs-measured plot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import spearmanr

from evaluators.latency.errors import LatencyError
from evaluators.latency.fit import OverheadFit, reference_fit_specs
from evaluators.latency.measure import measure_many
from evaluators.latency.protocol import LatencyProtocol
from evaluators.latency.table import LatencyTable
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec


def sample_specs(
    space: SearchSpace, n: int, *, seed: int = 0, exclude: Iterable[ArchSpec] = ()
) -> list[ArchSpec]:
    """``n`` distinct specs drawn uniformly from ``space`` by a seeded Optuna ``RandomSampler``,
    none of them in ``exclude``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise LatencyError(f"number of specs must be an integer >= 0, got {n!r}")
    excluded = set(exclude)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        found: dict[ArchSpec, None] = {}
        for _ in range(50 * n + 50):
            if len(found) == n:
                break
            trial = study.ask()
            spec = space.sample(trial)
            study.tell(trial, 0.0)
            if spec not in excluded:
                found[spec] = None
    finally:
        optuna.logging.set_verbosity(verbosity)
    if len(found) < n:
        raise LatencyError(f"the space holds fewer than {n} distinct specs outside the excluded ones")
    return list(found)


def space_fit_specs(space: SearchSpace, n: int, *, seed: int = 0) -> list[ArchSpec]:
    """The networks a table's overhead is fitted on: the space's seed, ``n - 1`` samples of the
    space (drawn with ``seed + 1``, so none is a validation sample drawn with ``seed``) and the
    V3 references at four widths, which spread the latencies wide enough to pin the slope
    down. Empty when ``n`` is 0."""
    if n <= 0:
        return []
    first = space.seed
    references = reference_fit_specs(
        num_classes=first.num_classes, resolution=first.resolution, in_channels=first.in_channels
    )
    samples = sample_specs(space, n - 1, seed=seed + 1, exclude=[first])
    return list(dict.fromkeys([first, *samples, *references]))


@dataclass(frozen=True)
class ValidationReport:
    """Predicted and measured latencies of ``specs`` (spec strings) under ``protocol``."""

    protocol: LatencyProtocol
    fit: OverheadFit
    specs: tuple[str, ...]
    predicted_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    measured_iqr_ms: tuple[float, ...]
    seconds: float

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol.to_dict(),
            "fit": self.fit.to_dict(),
            "n": len(self.specs),
            "mape": self.mape,
            "within_10": self.within_10,
            "max_error": self.max_error,
            "spearman": self.spearman,
            "seconds": self.seconds,
            "specs": [
                {"spec": s, "predicted_ms": p, "measured_ms": m, "measured_iqr_ms": q}
                for s, p, m, q in zip(
                    self.specs, self.predicted_ms, self.measured_ms, self.measured_iqr_ms, strict=True
                )
            ],
        }


def validate_table(
    table: LatencyTable, specs: Sequence[ArchSpec], *, rounds: int = 5, progress: bool = True
) -> ValidationReport:
    """Predict each spec from ``table`` (measuring missing rows), then measure each end to end
    in ``rounds`` interleaved rounds, and compare."""
    specs = list(dict.fromkeys(specs))
    if not specs:
        raise LatencyError("validation needs at least one spec")
    start = time.perf_counter()
    table.build([layer for spec in specs for layer in spec.layers()], progress=progress)
    predicted = [table.predict_ms(spec) for spec in specs]
    measured = measure_many(specs, table.protocol, rounds=rounds, progress=progress, desc="timing networks")
    return ValidationReport(
        protocol=table.protocol,
        fit=table.fit,
        specs=tuple(str(s) for s in specs),
        predicted_ms=tuple(predicted),
        measured_ms=tuple(r.ms for r in measured),
        measured_iqr_ms=tuple(r.iqr_ms for r in measured),
        seconds=time.perf_counter() - start,
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
        f"{p.resolution}x{p.resolution}, {p.statistic} of {p.runs}, {p.timer} timer",
        fontsize=9,
    )
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
