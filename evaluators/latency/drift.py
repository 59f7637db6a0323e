"""Drift correction: timing against a fixed reference workload measured alongside.

On shared and virtual CPUs the speed of a core changes by 10-40% from one second to the next
(other tenants, frequency scaling), far more than the differences a search must rank. A
lookup table measured over minutes then mixes rows timed at different speeds, and two end-to-
end timings of the same network disagree. What changes slowly is the *speed*, and it affects a
small fixed workload run a few milliseconds earlier or later the same way. So a corrected run
is ``t * reference_ms / r``: the target's time ``t`` scaled by how much slower than usual the
reference ran next to it (``r``, the mean of the reference timings just before and just after
the group of runs). ``reference_ms`` -- the reference's time when the machine runs at full
speed -- is calibrated once per process (a low percentile over a few seconds of runs) or taken
from the lookup table being extended, so that all rows of one table share one unit.

The reference is run three times for each timing and only the third run counts: the target
evicts the reference from the caches, and a cold reference would measure the target's
footprint instead of the machine's speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from search_spaces.builder import build_model
from search_spaces.reference import reference_spec

GROUP_MS = 5.0  # target runs timed between two reference timings, in ms of target time
CALIBRATION_S = 3.0  # seconds of reference runs when calibrating
CALIBRATION_PERCENTILE = 10.0  # of the calibration runs: the machine at full speed

Clock = Callable[[], int]


def clock_for(timer: str) -> Clock:
    """The nanosecond clock of a protocol's ``timer`` (``wall`` or ``thread_cpu``)."""
    return time.thread_time_ns if timer == "thread_cpu" else time.perf_counter_ns


class SpeedReference:
    """A fixed small workload (stem and first two bneck blocks of MobileNetV3-Small at
    112x112, ~0.5 ms on one core): convolutions, depthwise, squeeze-and-excitation and
    hard-swish, the operator mix of the networks being timed."""

    def __init__(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = build_model(reference_spec("mobilenet_v3_small", resolution=112))
        self.module = nn.Sequential(net.stem, net.blocks[:2]).eval()
        self.x = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))

    def time_ms(self, clock: Clock) -> float:
        """One warm timing: two runs put the reference back in the caches (after a network the
        first is ~60% slower, the second still ~5%), the third is timed."""
        self.module(self.x)
        self.module(self.x)
        start = clock()
        self.module(self.x)
        return (clock() - start) / 1e6

    def calibrate(self, clock: Clock) -> float:
        """The reference's time at full speed: a low percentile of its timings over
        :data:`CALIBRATION_S` seconds (slow spells last a second or two; the percentile skips
        them)."""
        for _ in range(5):
            self.time_ms(clock)
        times: list[float] = []
        deadline = time.monotonic() + CALIBRATION_S
        while time.monotonic() < deadline or len(times) < 20:
            times.append(self.time_ms(clock))
        return float(np.percentile(times, CALIBRATION_PERCENTILE))


_reference: SpeedReference | None = None
_calibrated: dict[tuple[int, str], float] = {}


def speed_reference() -> SpeedReference:
    """The process's :class:`SpeedReference` (built once)."""
    global _reference
    if _reference is None:
        _reference = SpeedReference()
    return _reference


def calibrated_reference_ms(threads: int, timer: str) -> float:
    """The reference's full-speed time under ``threads`` and ``timer``, calibrated once per
    process (called by the measurement with torch's threads, inference mode and its lock held)."""
    key = (threads, timer)
    if key not in _calibrated:
        _calibrated[key] = speed_reference().calibrate(clock_for(timer))
    return _calibrated[key]


def corrected_runs(
    run: Callable[[], float],
    reference: Callable[[], float],
    runs: int,
    reference_ms: float,
    estimate_ms: float,
) -> list[float]:
    """``runs`` timings of ``run`` (each returns ms), each scaled by ``reference_ms`` over the
    mean of the ``reference`` timings bracketing its group; groups last about
    :data:`GROUP_MS` (``estimate_ms`` is the expected time of one run)."""
    group = max(1, math.ceil(GROUP_MS / max(estimate_ms, 1e-6)))
    before = reference()
    out: list[float] = []
    while len(out) < runs:
        times = [run() for _ in range(min(group, runs - len(out)))]
        after = reference()
        factor = reference_ms / ((before + after) / 2)
        out.extend(t * factor for t in times)
        before = after
    return out
