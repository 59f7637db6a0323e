"""Typed latency configuration (the schema of ``conf/latency/*.yaml``) and the factory the
search and refine commands call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluators.latency.evaluator import LutLatency, MeasuredLatency
from evaluators.latency.protocol import LatencyProtocol, default_table_name
from evaluators.latency.table import LatencyTable
from search_spaces.errors import ConfigError

MODES = ("lut", "measure")


@dataclass
class LatencyConfig:
    """How latency is obtained. The protocol fields are :class:`LatencyProtocol`'s; the input
    resolution comes from the task (data set or space), not from here."""

    device: str = "cpu"  # cpu | cuda | cuda:N | the name of an external device (imported tables)
    threads: int = 1
    batch_size: int = 1
    memory_format: str = "contiguous"  # contiguous | channels_last
    warmup: int = 10
    runs: int = 30
    statistic: str = "median"  # median | min | mean
    timer: str = "wall"  # wall | thread_cpu
    drift_correction: str = "auto"  # reference | none | auto (reference on cpu, else none)
    runtime: str = "torch"  # torch (eager) | onnxruntime (exported, timed in an InferenceSession)
    ort_optimization: str | None = None  # disable|basic|extended|all (onnxruntime; null: all)
    ort_provider: str | None = None  # onnxruntime execution provider (null: CPUExecutionProvider)
    mode: str = "lut"  # lut: predicted by a lookup table | measure: every spec timed end to end
    table: str | None = None  # table file; null: <tables_dir>/<device>-t<threads>-b<batch>-r<res>.json
    tables_dir: str = "tables"
    auto_fit: bool = True  # fit a table's overhead on the V3 references when it has none
    fit_rounds: int = 3  # interleaved rounds when timing networks for the fit
    # mode=measure: drift-correction unit; null: calibrated (tables keep their own)
    reference_ms: float | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting outside the protocol's own."""
        if not self.device:
            raise ConfigError("latency.device: required; give the device's name, "
                              "e.g. latency.device=pixel7-tflite")
        if self.mode not in MODES:
            raise ConfigError(f"latency.mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        if isinstance(self.fit_rounds, bool) or not isinstance(self.fit_rounds, int) or self.fit_rounds < 1:
            raise ConfigError(f"latency.fit_rounds: must be an integer >= 1, got {self.fit_rounds!r}")
        if self.reference_ms is not None and not self.reference_ms > 0:
            raise ConfigError("latency.reference_ms: must be a positive number of ms or null, "
                              f"got {self.reference_ms!r}")

    def protocol(self, resolution: int) -> LatencyProtocol:
        """The protocol of these settings at ``resolution`` (validated)."""
        self.validate()
        return LatencyProtocol(
            device=self.device,
            threads=self.threads,
            batch_size=self.batch_size,
            resolution=resolution,
            memory_format=self.memory_format,
            warmup=self.warmup,
            runs=self.runs,
            statistic=self.statistic,
            timer=self.timer,
            drift_correction=self.drift_correction,
            runtime=self.runtime,
            ort_optimization=self.ort_optimization,
            ort_provider=self.ort_provider,
        )

    def table_path(self, resolution: int) -> Path:
        """``table`` if set, else the default file name for the protocol in ``tables_dir``."""
        if self.table:
            return Path(self.table)
        return Path(self.tables_dir) / default_table_name(self.protocol(resolution))


def latency_evaluator(cfg: LatencyConfig, resolution: int) -> LutLatency | MeasuredLatency:
    """The latency evaluator ``cfg`` describes, for networks of input ``resolution``.

    ``mode=lut`` opens (or starts) the table for the protocol; a table for another protocol
    or machine raises :class:`LatencyError`. ``mode=measure`` needs a device of this
    machine."""
    protocol = cfg.protocol(resolution)
    if cfg.mode == "measure":
        return MeasuredLatency(protocol, reference_ms=cfg.reference_ms)
    table = LatencyTable.open(cfg.table_path(resolution), protocol, create=True)
    return LutLatency(table, auto_fit=cfg.auto_fit, fit_rounds=cfg.fit_rounds)
