"""Analytic stand-ins for the evaluators, for dry runs of the search machinery (storage,
workers, resume, samplers) in seconds: no training, no timing.

The accuracy surrogate rises with log MAdds and with SE/hard-swish use, plus a small
deterministic per-spec jitter; the latency surrogate is proportional to MAdds. Neither claims
anything about real networks.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from evaluators.accuracy.base import AccuracyResult, Report
from evaluators.cost import count_cost
from evaluators.latency.protocol import LatencyProtocol
from evaluators.training import COMPLETED
from search.objectives import Objective
from search.runner import Components
from search_spaces.reference import reference_spec
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec


@dataclass(frozen=True)
class SurrogateResult(AccuracyResult):
    status: str = COMPLETED


class SurrogateAccuracy:
    """Deterministic accuracy-like score in (0, 1); ``nan_specs`` yield a diverged status."""

    name = "surrogate"
    unit = "accuracy"

    def __init__(self, *, steps: int = 3, sleep_s: float = 0.0, fail_every: int = 0) -> None:
        self.steps = steps
        self.sleep_s = sleep_s
        self.fail_every = fail_every

    def evaluate(self, spec: ArchSpec, report: Report | None = None) -> SurrogateResult:
        cost = count_cost(spec)
        digest = int(hashlib.sha256(str(spec).encode()).hexdigest()[:8], 16)
        jitter = (digest % 1000) / 1000 * 0.02
        quality = sum(0.004 * b.se + 0.003 * (b.act == "HS") + 0.001 * b.kernel for b in spec.blocks)
        final = min(0.99, 0.5 + 0.06 * math.log10(cost.madds) + quality + jitter - 0.3)
        for step in range(1, self.steps + 1):
            if self.sleep_s:
                time.sleep(self.sleep_s)
            if report is not None:
                report(step, final * step / self.steps, step == self.steps)
        if self.fail_every and digest % self.fail_every == 0:
            return SurrogateResult(float("nan"), 0.0, status="diverged")
        return SurrogateResult(final, self.steps * self.sleep_s)


class MaddsLatency:
    """Latency surrogate: ``ms_per_mmadd`` milliseconds per million multiply-adds."""

    backend = "analytic"

    def __init__(self, ms_per_mmadd: float = 0.1, *, resolution: int = 32) -> None:
        self.ms_per_mmadd = ms_per_mmadd
        self.protocol = LatencyProtocol(device="analytic", resolution=resolution)

    def __call__(self, spec: ArchSpec) -> float:
        return count_cost(spec).madds / 1e6 * self.ms_per_mmadd

    def describe(self) -> str:
        return f"analytic: {self.ms_per_mmadd} ms per M MAdds"


def dry_components(
    seed: str = "mobilenet_v3_small",
    *,
    mode: str = "soft",
    target_ratio: float = 0.8,
    w: float = -0.15,
    resolution: int = 32,
    num_classes: int = 10,
    sleep_s: float = 0.0,
    fail_every: int = 0,
) -> Components:
    """Components for a dry run (picklable through ``functools.partial``)."""
    space = SearchSpace(reference_spec(seed, num_classes=num_classes, resolution=resolution))
    latency = MaddsLatency(resolution=resolution)
    objective = Objective(mode=mode, target_ms=target_ratio * latency(space.seed), w=w)
    return Components(space=space, objective=objective,
                      accuracy=SurrogateAccuracy(sleep_s=sleep_s, fail_every=fail_every),
                      latency=latency)
