"""The latency protocol: everything that changes a latency figure, stated and stored with it.

A figure in milliseconds means nothing without the device, the machine, the threads, the
batch, the input resolution, the memory format, the warm-up, the number of runs, the
statistic and the clock. :class:`LatencyProtocol` holds all of them; results and lookup
tables carry it, and a table is never used under another protocol.

Devices are ``cpu``, ``cuda`` or ``cuda:N`` (this machine; ``cuda`` means ``cuda:0``), or any
other name (``pixel7-tflite``) for a device measured elsewhere whose figures are imported.

The runtime is ``torch`` (eager PyTorch) or ``onnxruntime`` (the network or layer exported with
the project's ONNX exporter and run in an ``onnxruntime.InferenceSession``: see
:mod:`evaluators.latency.kit_bench` for the session settings); tables of the two never mix.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import Any

from search_spaces.errors import ConfigError
from search_spaces.spec import MIN_RESOLUTION

LOCAL_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
MEMORY_FORMATS = ("contiguous", "channels_last")
STATISTICS = ("median", "min", "mean")
TIMERS = ("wall", "thread_cpu")
DRIFT_CORRECTIONS = ("reference", "none")
RUNTIMES = ("torch", "onnxruntime")
ORT_OPTIMIZATIONS = ("disable", "basic", "extended", "all")  # onnxruntime graph optimization levels
ORT_PROVIDER = re.compile(r"^[A-Za-z][A-Za-z0-9]*ExecutionProvider$")
NOT_APPLICABLE = "-"  # the onnxruntime fields of a torch protocol


@dataclass(frozen=True)
class Fingerprint:
    """What identifies the machine a figure was measured on."""

    host: str  # CPU model and logical core count, or "external"
    accelerator: str  # GPU name and CUDA version, "onnxruntime <version>" (runtime onnxruntime), or "-"
    torch: str  # torch version, or "-" for external devices

    def __str__(self) -> str:
        parts = [self.host] + ([self.accelerator] if self.accelerator != "-" else [])
        if self.torch != "-":
            parts.append(f"torch {self.torch}")
        return ", ".join(parts)


EXTERNAL = Fingerprint("external", "-", "-")


def is_local_device(device: str) -> bool:
    """``cpu``, ``cuda`` and ``cuda:N`` are this machine; other names are external devices."""
    return bool(LOCAL_DEVICE.match(device))


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (x86 ``model name``, ARM ``Hardware``/``Model``), or
    what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            info = handle.read()
    except OSError:
        info = ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine() or "unknown cpu"


@cache
def local_fingerprint(device: str, runtime: str = "torch") -> Fingerprint:
    """The fingerprint of this machine for a local ``device`` (``cpu`` or ``cuda:N``) and
    ``runtime`` (onnxruntime: its version is part of the machine)."""
    import torch

    host = f"{cpu_model()} x{os.cpu_count() or 1}"
    accelerator = "-"
    if runtime == "onnxruntime":
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError(
                "latency.runtime: onnxruntime is not installed here (pip install onnxruntime)"
            ) from None
        accelerator = f"onnxruntime {onnxruntime.__version__}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"latency.device: {device!r} needs CUDA, which this machine does not have (use device=cpu)"
            )
        index = int(device.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"latency.device: {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        accelerator = f"{torch.cuda.get_device_name(index)}, CUDA {torch.version.cuda}"
    return Fingerprint(host, accelerator, torch.__version__)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"latency.{name}: must be an integer >= {minimum}, got {value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"latency.{name}: must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class LatencyProtocol:
    """How a latency is measured. ``fingerprint`` is filled in for this machine when left out.

    The timed call is ``model(x)`` in eval mode under ``torch.inference_mode``, with
    ``threads`` torch threads, denormal floats flushed to zero (random-init networks produce
    denormal activations that trained ones do not), garbage collection paused and, on CPU,
    the allocator in steady state (no page faults; see :mod:`evaluators.latency.measure`). ``warmup``
    untimed runs come first; ``statistic`` summarizes ``runs`` timed runs. ``timer``:
    ``wall`` (wall clock; CUDA events on GPUs) or ``thread_cpu`` (the CPU time of the
    measuring thread: robust on a busy shared machine, CPU with 1 thread only).
    ``drift_correction``: ``reference`` scales every run by the speed of a fixed reference
    workload timed next to it (CPU only; see :mod:`evaluators.latency.drift`), ``none`` takes
    the runs as they are; ``auto`` (the default) is ``reference`` on ``cpu``, else ``none``.

    What the figure means: the ``statistic`` of wall-clock milliseconds of the timed call, as a
    plain loop (warm-up, then timed runs) reads them on this machine when it is quiet; drift
    correction only takes out the slow spells other processes cause, in a unit stored per
    machine (:mod:`evaluators.latency.speed_unit`), so figures of different processes and
    days agree. ``thread_cpu`` figures are CPU milliseconds of the thread instead.

    ``runtime="onnxruntime"``: the timed call is ``session.run`` of an ``InferenceSession`` on
    the exported model (``threads`` intra-op threads, 1 inter-op thread, sequential execution,
    graph optimization ``ort_optimization``, execution provider ``ort_provider``, denormals as
    zero) on a fixed float32 input, contiguous; drift-corrected on ``cpu`` like torch.
    ``ort_*`` default to ``all`` and ``CPUExecutionProvider`` and are ``-`` for torch.
    """

    device: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    resolution: int = 224
    memory_format: str = "contiguous"
    warmup: int = 10
    runs: int = 30
    statistic: str = "median"
    timer: str = "wall"
    drift_correction: str = "auto"
    runtime: str = "torch"
    ort_optimization: str | None = None
    ort_provider: str | None = None
    fingerprint: Fingerprint | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not DEVICE_NAME.match(self.device):
            raise ConfigError(
                f"latency.device: {self.device!r} is not a device name; use cpu, cuda, cuda:N or the "
                "name of an external device (letters, digits, '.', '_', '+', '-'), e.g. pixel7-tflite"
            )
        if self.device == "cuda":
            object.__setattr__(self, "device", "cuda:0")
        _check_int("threads", self.threads, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("resolution", self.resolution, MIN_RESOLUTION)
        _check_choice("memory_format", self.memory_format, MEMORY_FORMATS)
        _check_int("warmup", self.warmup, 0)
        _check_int("runs", self.runs, 1)
        _check_choice("statistic", self.statistic, STATISTICS)
        _check_choice("timer", self.timer, TIMERS)
        _check_choice("runtime", self.runtime, RUNTIMES)
        self._check_runtime()
        if self.drift_correction == "auto":
            object.__setattr__(self, "drift_correction", "reference" if self.device == "cpu" else "none")
        _check_choice("drift_correction", self.drift_correction, (*DRIFT_CORRECTIONS, "auto"))
        if self.drift_correction == "reference" and self.device != "cpu":
            raise ConfigError(
                "latency.drift_correction: reference times a CPU workload next to each run; it "
                f"needs device=cpu, got device={self.device} (use none or auto)"
            )
        if self.timer == "thread_cpu" and (self.device != "cpu" or self.threads != 1):
            raise ConfigError(
                "latency.timer: thread_cpu measures one CPU thread; it needs device=cpu and "
                f"threads=1, got device={self.device} threads={self.threads}"
            )
        if self.fingerprint is None:
            fingerprint = local_fingerprint(self.device, self.runtime) if self.local else EXTERNAL
            object.__setattr__(self, "fingerprint", fingerprint)
        elif isinstance(self.fingerprint, dict):
            object.__setattr__(self, "fingerprint", _fingerprint_from(self.fingerprint))
        elif not isinstance(self.fingerprint, Fingerprint):
            raise ConfigError(f"latency.fingerprint: expected a Fingerprint, got {self.fingerprint!r}")

    def _check_runtime(self) -> None:
        """Resolve and check the ``ort_*`` fields and what onnxruntime timing cannot do."""
        if self.runtime == "torch":
            for name in ("ort_optimization", "ort_provider"):
                if getattr(self, name) not in (None, NOT_APPLICABLE):
                    raise ConfigError(f"latency.{name}: applies to runtime=onnxruntime only, got "
                                      f"{getattr(self, name)!r} with runtime=torch (leave it null)")
                object.__setattr__(self, name, NOT_APPLICABLE)
            return
        if self.ort_optimization in (None, NOT_APPLICABLE):
            object.__setattr__(self, "ort_optimization", "all")
        if self.ort_provider in (None, NOT_APPLICABLE):
            object.__setattr__(self, "ort_provider", "CPUExecutionProvider")
        _check_choice("ort_optimization", self.ort_optimization, ORT_OPTIMIZATIONS)
        if not isinstance(self.ort_provider, str) or not ORT_PROVIDER.match(self.ort_provider):
            raise ConfigError("latency.ort_provider: must name an onnxruntime execution provider (e.g. "
                              f"CPUExecutionProvider, XnnpackExecutionProvider), got {self.ort_provider!r}")
        problems = [
            (self.device.startswith("cuda"),
             f"device: {self.device} is not supported (use cpu or an external device name)"),
            (self.device == "cpu" and self.ort_provider != "CPUExecutionProvider",
             f"ort_provider: {self.ort_provider} is not this machine's CPU (use CPUExecutionProvider)"),
            (self.memory_format != "contiguous", "memory_format: must be contiguous"),
            (self.timer != "wall", "timer: must be wall (stopwatch milliseconds)"),
        ]
        for bad, message in problems:
            if bad:
                raise ConfigError(f"latency.{message} with runtime=onnxruntime")

    @property
    def local(self) -> bool:
        """Whether the device is on this kind of machine (cpu/cuda) rather than external."""
        return is_local_device(self.device)

    @property
    def measurable(self) -> bool:
        """Whether this machine can measure under this protocol (local device, same fingerprint)."""
        if not self.local:
            return False
        try:
            return self.fingerprint == local_fingerprint(self.device, self.runtime)
        except ConfigError:
            return False

    def replace(self, **changes: Any) -> LatencyProtocol:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {name for name in ("device", "runtime") if changes.get(name, data[name]) != data[name]}
        if moved:  # what depends on the device or runtime is resolved again
            data["fingerprint"] = None
            data["drift_correction"] = "auto"
        if "runtime" in moved:
            data["ort_optimization"] = data["ort_provider"] = None
        return LatencyProtocol(**{**data, **changes})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a mapping; a torch protocol leaves out the runtime fields (the files of
        tables measured before onnxruntime existed stay as they are)."""
        data = asdict(self)
        if self.runtime == "torch":
            for name in RUNTIME_FIELDS:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> LatencyProtocol:
        """Inverse of :meth:`to_dict`; unknown or missing fields raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"latency protocol: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown, missing = set(data) - names, names - set(data) - set(RUNTIME_FIELDS)
        if unknown or missing:
            raise ConfigError(
                f"latency protocol: unknown field(s) {sorted(unknown)}, missing field(s) "
                f"{sorted(missing)}; expected {sorted(names)}"
            )
        return cls(**data)

    def differences(self, other: LatencyProtocol) -> list[str]:
        """``field: mine vs other`` for every field that differs."""
        found = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                found.append(f"{f.name}: {mine} vs {theirs}")
        return found

    def describe(self) -> str:
        """One line: ``cpu [machine], 1 thread, batch 1, 224x224, ...``."""
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        clock = {
            "wall": "wall clock" if self.device == "cpu" or not self.local else "CUDA events",
            "thread_cpu": "thread CPU time",
        }[self.timer]
        drift = ", drift-corrected" if self.drift_correction == "reference" else ""
        runtime = (f", onnxruntime InferenceSession ({self.ort_provider}, graph optimization "
                   f"{self.ort_optimization})" if self.runtime == "onnxruntime" else "")
        return (
            f"{self.device} [{self.fingerprint}], {threads}, batch {self.batch_size}, "
            f"{self.resolution}x{self.resolution}, {self.memory_format}, {self.warmup} warm-up, "
            f"{self.runs} runs, {self.statistic}, {clock}{drift}{runtime}"
        )


RUNTIME_FIELDS = ("runtime", "ort_optimization", "ort_provider")  # optional in files (default: torch)


def default_table_name(protocol: LatencyProtocol) -> str:
    """``<device>-t<threads>-b<batch>-r<resolution>[-cl][-cputime][-nodrift][-ort].json``
    (``-nodrift``: a CPU table without drift correction; ``-ort``: runtime onnxruntime,
    with ``-<level>`` unless its graph optimization is ``all``)."""
    device = re.sub(r"[^A-Za-z0-9._+-]", "", protocol.device)
    name = f"{device}-t{protocol.threads}-b{protocol.batch_size}-r{protocol.resolution}"
    if protocol.memory_format == "channels_last":
        name += "-cl"
    if protocol.timer == "thread_cpu":
        name += "-cputime"
    if protocol.device == "cpu" and protocol.drift_correction == "none":
        name += "-nodrift"
    if protocol.runtime == "onnxruntime":
        name += "-ort" + ("" if protocol.ort_optimization == "all" else f"-{protocol.ort_optimization}")
    return name + ".json"


def _fingerprint_from(data: dict[str, Any]) -> Fingerprint:
    names = {f.name for f in fields(Fingerprint)}
    if set(data) != names or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"latency.fingerprint: expected strings {sorted(names)}, got {data!r}")
    return Fingerprint(**data)
