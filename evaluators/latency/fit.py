"""From a sum of isolated layers to a network's latency: ``scale x sum + overhead``.

A layer timed alone runs faster than inside a network: alone, its weights and input stay in
the caches from one run to the next, while in a network the other layers evict them. Calls
between layers and the network's own call add a fixed cost. Both are fitted by least squares
on a few networks measured end to end and stored with the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from search_spaces.errors import LatencyError
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.spec import ArchSpec

REFERENCE_WIDTHS = (0.5, 0.75, 1.0, 1.25)
SCALE_RANGE = (0.5, 3.0)  # slopes outside are taken for noise: the overhead alone is fitted


@dataclass(frozen=True)
class OverheadFit:
    """``predicted = scale * sum(layer rows) + overhead_ms``. ``n_specs`` networks measured end
    to end fitted it (0: not fitted, or an imported overhead); ``rmse_ms`` is its residual."""

    scale: float = 1.0
    overhead_ms: float = 0.0
    n_specs: int = 0
    rmse_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("scale", "overhead_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise LatencyError(f"fit.{name}: must be a finite number, got {value!r}")
        if self.scale <= 0:
            raise LatencyError(f"fit.scale: must be > 0, got {self.scale}")
        if isinstance(self.n_specs, bool) or not isinstance(self.n_specs, int) or self.n_specs < 0:
            raise LatencyError(f"fit.n_specs: must be an integer >= 0, got {self.n_specs!r}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "overhead_ms", float(self.overhead_ms))

    @property
    def fitted(self) -> bool:
        """Whether a fit (or an imported overhead) is set, not the plain-sum default."""
        return self.n_specs > 0 or self.scale != 1.0 or self.overhead_ms != 0.0

    def apply(self, sum_ms: float) -> float:
        return self.scale * sum_ms + self.overhead_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> OverheadFit:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise LatencyError(f"fit: expected the fields {sorted(names)}, got {data!r}")
        return cls(**data)


def fit_scale_overhead(sums_ms: Sequence[float], measured_ms: Sequence[float]) -> OverheadFit:
    """Least-squares ``measured = scale * sum + overhead``.

    With fewer than 3 networks, or sums too alike to tell a slope (spread under 20% of their
    mean), only the overhead is fitted (``scale`` 1); so is it when the slope falls outside
    :data:`SCALE_RANGE` (cache effects make networks slower than their layers alone, by 10-40%
    on CPUs, not 3x: such a slope comes from noisy measurements)."""
    sums, measured = np.asarray(sums_ms, dtype=float), np.asarray(measured_ms, dtype=float)
    if sums.shape != measured.shape or sums.ndim != 1 or len(sums) == 0:
        raise LatencyError(
            f"fit: need as many sums as measurements (>= 1), got {len(sums)} and {len(measured)}"
        )
    scale, overhead = 1.0, float(np.mean(measured - sums))
    if len(sums) >= 3 and np.ptp(sums) > 0.2 * np.mean(sums):
        design = np.stack([sums, np.ones_like(sums)], axis=1)
        (slope, intercept), *_ = np.linalg.lstsq(design, measured, rcond=None)
        if SCALE_RANGE[0] <= slope <= SCALE_RANGE[1]:
            scale, overhead = float(slope), float(intercept)
    residual = measured - (scale * sums + overhead)
    return OverheadFit(
        scale=scale, overhead_ms=overhead, n_specs=len(sums), rmse_ms=float(np.sqrt(np.mean(residual**2)))
    )


def reference_fit_specs(like: ArchSpec) -> list[ArchSpec]:
    """MobileNetV3-Large and -Small at widths 0.5-1.25, with ``like``'s classes, resolution and
    input channels: networks spanning a wide latency range (about 4x), which pins the fit's
    slope down."""
    return [
        reference_spec(name, width_mult=w, num_classes=like.num_classes, resolution=like.resolution)
        .replace(in_channels=like.in_channels)
        for name in REFERENCES
        for w in REFERENCE_WIDTHS
    ]
