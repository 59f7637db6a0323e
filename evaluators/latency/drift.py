"""Drift correction: timing against a fixed reference workload measured alongside.

On shared and virtual CPUs the speed of a core changes from one second to the next: on this
project's 2-vCPU machines a busy sibling hyperthread (another process, another tenant) halves
it for seconds at a time, far more than the differences a search must rank. A lookup table
measured over minutes then mixes rows timed at different speeds, and two end-to-end timings of
the same network disagree. What changes slowly is the *speed*, and it affects a small fixed
workload run a few milliseconds earlier or later the same way. So a corrected run is
``t * reference_ms / r``: the target's time ``t`` scaled by how much slower than at full speed
the reference ran next to it (``r``, the mean of the reference timings just before and just
after the group of runs).

``reference_ms`` is the unit: the reference's time on this machine at full speed, timed the
way ``r`` is. A corrected figure is therefore what a stopwatch reads on this machine when it
is quiet (nothing else running on its cores), in real milliseconds. The unit is calibrated
once per machine, protocol threads and clock, and kept in a small file
(:mod:`evaluators.latency.speed_unit`): every process, today's and next month's, measures in
the same unit, and a lookup table keeps the unit it was built with.

The reference is run four times for each timing and the faster of the last two counts: the
target evicts the reference from the caches, and a cold reference would measure the target's
footprint instead of the machine's speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from evaluators.latency.speed_unit import read_unit, stored_unit
from search_spaces.builder import build_model
from search_spaces.reference import reference_spec

GROUP_MS = 5.0  # target runs timed between two reference timings, in ms of target time
CALIBRATION_S = 3.0  # seconds of reference runs when calibrating (the first time on a machine:
FIRST_CALIBRATION_S = 10.0  # longer than the slow spells seen, up to ~7 s) ...
CALIBRATION_WINDOW_S = 0.1  # ... in windows of this length, each summarized by its median
FULL_SPEED_MARGIN = 1.25  # windows within this factor of the fastest one ran at full speed

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
        """One warm timing: two untimed runs put the reference back in the caches (after a
        network the first is ~60% slower, the second still ~5%), then the faster of two timed
        runs (a single run still carries the eviction and the odd interruption)."""
        self.module(self.x)
        self.module(self.x)
        best = math.inf
        for _ in range(2):
            start = clock()
            self.module(self.x)
            best = min(best, (clock() - start) / 1e6)
        return best

    def calibrate(self, clock: Clock, seconds: float = CALIBRATION_S) -> float:
        """The reference's time at full speed: timings over ``seconds`` in windows of
        :data:`CALIBRATION_WINDOW_S`; the median of the windows that ran within
        :data:`FULL_SPEED_MARGIN` of the fastest one (slow spells last seconds and are skipped;
        a calibration that sees only a slow spell is caught by :func:`stored_unit`)."""
        for _ in range(5):
            self.time_ms(clock)
        windows: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or len(windows) < 3:
            times: list[float] = []
            end = time.monotonic() + CALIBRATION_WINDOW_S
            while time.monotonic() < end or len(times) < 3:
                times.append(self.time_ms(clock))
            windows.append(float(np.median(times)))
        fastest = min(windows)
        return float(np.median([w for w in windows if w <= FULL_SPEED_MARGIN * fastest]))


_reference: SpeedReference | None = None
_calibrated: dict[str, float] = {}


def speed_reference() -> SpeedReference:
    """The process's :class:`SpeedReference` (built once)."""
    global _reference
    if _reference is None:
        _reference = SpeedReference()
    return _reference


def calibrated_reference_ms(threads: int, timer: str, machine: str) -> float:
    """The reference's full-speed time under ``threads`` and ``timer`` on ``machine`` (a
    fingerprint string): calibrated once per process (for :data:`FIRST_CALIBRATION_S` when the
    machine has no stored unit yet) and reconciled with the unit stored for the machine
    (:func:`stored_unit`), which it returns. Called by the measurement with torch's threads,
    inference mode and its lock held."""
    key = unit_key(machine, threads, timer)
    if key not in _calibrated:
        seconds = CALIBRATION_S if read_unit(key) is not None else FIRST_CALIBRATION_S
        _calibrated[key] = stored_unit(key, speed_reference().calibrate(clock_for(timer), seconds))
    return _calibrated[key]


def unit_key(machine: str, threads: int, timer: str) -> str:
    """The key of a unit in the machine's store."""
    return f"{machine}|threads={threads}|timer={timer}"


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
