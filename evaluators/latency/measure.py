"""Timing a spec, a single layer or a module under a :class:`LatencyProtocol`.

CPU runs are timed one by one with a monotonic clock; CUDA runs with CUDA events and a
synchronization after each run (batch-1 latency includes kernel-launch time). Torch's thread
count, denormal flushing and the garbage collector are set for the measurement and restored
after; the global random state is left as it was.

On Linux (glibc), CPU measurements first keep the C allocator from handing large blocks back
to the kernel (``mallopt``): otherwise whether a layer's activations land on fresh pages --
thousands of page faults, up to 3x the layer's time -- depends on what the process allocated
before, so the same layer times differently alone and inside a network, and from one process
to the next. Steady state without page faults is also what deployment runtimes with
preallocated arenas see. The setting stays for the rest of the process (putting glibc's
defaults back would switch off its adaptive threshold); the process keeps its peak heap.

With ``drift_correction=reference`` (the CPU default) every group of runs is bracketed by
timings of a fixed reference workload and scaled by the machine's speed at that moment (see
:mod:`evaluators.latency.drift`): the figure is the stopwatch on this machine when quiet, in
milliseconds of the machine's stored unit (``reference_ms``; a lookup table passes its own).

Several targets can be measured in interleaved rounds (``rounds > 1``): every target gets its
runs spread over the rounds, so a burst of load from other processes hits all of them alike
instead of ruining one.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import math
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from evaluators.latency.drift import calibrated_reference_ms, clock_for, corrected_runs, speed_reference
from evaluators.latency.onnxruntime_backend import export_key, onnxruntime_runner
from evaluators.latency.protocol import LatencyProtocol, local_fingerprint
from search_spaces.builder import build_layer, build_model, init_weights
from search_spaces.errors import LatencyError
from search_spaces.spec import ArchSpec, Layer

Target = ArchSpec | Layer | nn.Module

# One measurement at a time per process: threads of a search must not time each other.
_LOCK = threading.RLock()


@dataclass(frozen=True)
class LatencyResult:
    """A latency with its spread and the protocol it was measured under."""

    ms: float  # the protocol's statistic of the timed runs
    median_ms: float
    iqr_ms: float  # 75th minus 25th percentile of the runs
    n: int  # timed runs
    protocol: LatencyProtocol
    reference_ms: float | None = None  # the drift-correction unit, when the protocol corrects

    def __str__(self) -> str:
        median = "" if self.protocol.statistic == "median" else f"; median {self.median_ms:.3f} ms"
        drift = ("" if self.reference_ms is None
                 else f", drift-corrected (reference {self.reference_ms:.3f} ms)")
        return (
            f"{self.ms:.3f} ms ({self.protocol.statistic} of {self.n} runs{median}, "
            f"IQR {self.iqr_ms:.3f} ms{drift})"
        )


def check_measurable(protocol: LatencyProtocol) -> None:
    """Raise :class:`LatencyError` unless this machine can measure under ``protocol``."""
    if not protocol.local:
        raise LatencyError(
            f"device {protocol.device!r} is not this machine, so its latencies cannot be measured here; "
            "measure them on the device and import them (mobilenas lut action=import csv=...)"
        )
    here = local_fingerprint(protocol.device, protocol.runtime)
    if protocol.fingerprint != here:
        raise LatencyError(
            f"the protocol was recorded on another machine ({protocol.fingerprint}); this machine is "
            f"{here}, so it cannot add figures under it"
        )


def measure_latency(
    target: Target,
    protocol: LatencyProtocol | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    reference_ms: float | None = None,
) -> LatencyResult:
    """Latency of a spec (whole network), a :class:`Layer` (built alone, with its real input
    shape) or a module (input ``input_shape``, default ``(batch, 3, resolution, resolution)``).

    A spec's resolution must equal the protocol's. Modules are copied, never changed.
    """
    return measure_many(
        [target], protocol or LatencyProtocol(), input_shape=input_shape, reference_ms=reference_ms
    )[0]


def measure_many(
    targets: Sequence[Target],
    protocol: LatencyProtocol,
    *,
    rounds: int = 1,
    input_shape: tuple[int, ...] | None = None,
    progress: bool = False,
    desc: str = "measuring",
    reference_ms: float | None = None,
) -> list[LatencyResult]:
    """Measure each target; with ``rounds > 1`` the runs are interleaved across targets.

    Each target gets ``protocol.warmup`` untimed runs before its first round and one before
    each later round, and at least ``protocol.runs`` timed runs in all. ``reference_ms``: the
    drift-correction unit to use (a table passes its own); by default calibrated once per
    process. Ignored when the protocol does not correct drift.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LatencyError(f"rounds must be an integer >= 1, got {rounds!r}")
    if reference_ms is not None and not (isinstance(reference_ms, float | int) and reference_ms > 0):
        raise LatencyError(f"reference_ms must be a positive number of ms, got {reference_ms!r}")
    check_measurable(protocol)
    per_round = math.ceil(protocol.runs / rounds)
    samples: list[list[float]] = [[] for _ in targets]
    with _settings(protocol):
        if protocol.drift_correction == "reference":
            reference_ms = reference_ms or calibrated_reference_ms(
                protocol.threads, protocol.timer, str(protocol.fingerprint))
        else:
            reference_ms = None
        if rounds == 1:  # build one target at a time: tables measure thousands of layers
            for i, target in enumerate(tqdm(targets, desc=desc, disable=not progress, leave=False)):
                module, x = _prepare(target, protocol, input_shape)
                samples[i] = _timed_runs(module, x, protocol.warmup, per_round, protocol, reference_ms)
        else:
            prepared = [_prepare(t, protocol, input_shape) for t in targets]
            bar = tqdm(total=rounds * len(targets), desc=desc, disable=not progress, leave=False)
            for r in range(rounds):
                for i, (module, x) in enumerate(prepared):
                    warmup = protocol.warmup if r == 0 else min(1, protocol.warmup)
                    samples[i] += _timed_runs(module, x, warmup, per_round, protocol, reference_ms)
                    bar.update()
            bar.close()
    return [_summarize(s, protocol, reference_ms) for s in samples]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_allocator_steady = False


def steady_allocator() -> bool:
    """Keep glibc's allocator from returning freed memory to the kernel (no page faults on
    reuse); once per process. Returns whether it applies (Linux with glibc)."""
    global _allocator_steady
    if not _allocator_steady and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return False
        for threshold in (1 << 30, 32 << 20):  # newer glibc accept 1 GiB, older at most 32 MiB
            if libc.mallopt(_M_MMAP_THRESHOLD, threshold):
                break
        _allocator_steady = bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _allocator_steady


@contextmanager
def _settings(protocol: LatencyProtocol) -> Iterator[None]:
    if protocol.device == "cpu":
        steady_allocator()
    with _LOCK:
        threads = torch.get_num_threads()
        gc_enabled = gc.isenabled()
        torch.set_num_threads(protocol.threads)
        flushed = torch.set_flush_denormal(True)
        gc.disable()
        try:
            with torch.inference_mode():
                yield
        finally:
            if gc_enabled:
                gc.enable()
            if flushed:
                torch.set_flush_denormal(False)
            torch.set_num_threads(threads)


def _prepare(
    target: Target, protocol: LatencyProtocol, input_shape: tuple[int, ...] | None
) -> tuple[nn.Module | Callable[[Any], Any], Any]:
    batch = protocol.batch_size
    with torch.random.fork_rng(devices=[]):  # building modules must not move the global RNG
        if isinstance(target, ArchSpec):
            if target.resolution != protocol.resolution:
                raise LatencyError(
                    f"the spec's resolution {target.resolution} differs from the protocol's resolution "
                    f"{protocol.resolution}; measure at the spec's resolution or change the spec"
                )
            module: nn.Module = build_model(target)
            shape: tuple[int, ...] = (batch, target.in_channels, target.resolution, target.resolution)
        elif isinstance(target, Layer):
            module = build_layer(target)
            init_weights(module)
            shape = (batch, target.in_channels, target.resolution, target.resolution)
        elif isinstance(target, nn.Module):
            module = copy.deepcopy(target)
            shape = (
                tuple(input_shape) if input_shape else (batch, 3, protocol.resolution, protocol.resolution)
            )
        else:
            raise TypeError(
                f"cannot measure a {type(target).__name__}; expected ArchSpec, Layer or nn.Module"
            )
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if protocol.runtime == "onnxruntime":  # exported and timed in an InferenceSession
        return onnxruntime_runner(module, x, protocol, key=export_key(target))
    memory_format = (
        torch.channels_last if protocol.memory_format == "channels_last" else torch.contiguous_format
    )
    module = module.eval().to(device=protocol.device, memory_format=memory_format)  # type: ignore[call-overload]
    x = x.to(device=protocol.device, memory_format=memory_format if x.dim() == 4 else torch.contiguous_format)
    return module, x


def _timed_runs(
    module: nn.Module | Callable[[Any], Any],
    x: torch.Tensor,
    warmup: int,
    runs: int,
    protocol: LatencyProtocol,
    reference_ms: float | None = None,
) -> list[float]:
    """Milliseconds of each of ``runs`` calls, after ``warmup`` untimed calls; drift-corrected
    to ``reference_ms`` when given."""
    for _ in range(warmup):
        module(x)
    if protocol.device.startswith("cuda"):
        torch.cuda.synchronize(protocol.device)
        times = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times
    clock = clock_for(protocol.timer)

    def run() -> float:
        start = clock()
        module(x)
        return (clock() - start) / 1e6

    if reference_ms is None:
        return [run() for _ in range(runs)]
    reference = speed_reference()
    return corrected_runs(run, lambda: reference.time_ms(clock), runs, reference_ms, estimate_ms=run())


def _summarize(samples: list[float], protocol: LatencyProtocol, reference_ms: float | None) -> LatencyResult:
    runs = np.asarray(samples, dtype=float)
    statistic = getattr(np, protocol.statistic)  # median | min | mean (validated by the protocol)
    q25, q50, q75 = np.percentile(runs, [25, 50, 75])
    return LatencyResult(
        ms=float(statistic(runs)),
        median_ms=float(q50),
        iqr_ms=float(q75 - q25),
        n=len(runs),
        protocol=protocol,
        reference_ms=reference_ms,
    )
