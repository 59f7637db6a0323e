"""``mobilenas measure``: one architecture timed end to end, printed with its protocol."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from evaluators.latency import LatencyConfig, LutLatency, latency_evaluator, measure_many
from search.arch import arch_label, resolve_arch
from search_spaces.errors import ConfigError
from search_spaces.limits import SpecLimits


@dataclass
class MeasureConfig:
    """``mobilenas measure``'s config (conf/measure.yaml)."""

    limits: SpecLimits = field(default_factory=SpecLimits)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    arch: str = "mobilenet_v3_large"  # reference name, spec file (.json/.yaml/.txt) or spec string
    width_mult: float = 1.0  # width multiplier, for reference names only
    num_classes: int | None = None  # override the spec's classes
    resolution: int | None = None  # override the spec's input resolution (>= 32); the protocol uses it
    rounds: int = 1  # >1: split the runs into rounds (with a re-warm-up run each)
    predict: bool = False  # also print the lookup table's prediction (latency.table / tables_dir)

    def validate(self) -> None:
        self.latency.validate()
        if self.rounds < 1:
            raise ConfigError(f"measure.rounds: must be >= 1, got {self.rounds}")


CONFIG = MeasureConfig


def run(options: MeasureConfig) -> None:
    latency = options.latency
    spec = resolve_arch(
        options.arch,
        width_mult=options.width_mult,
        num_classes=options.num_classes,
        resolution=options.resolution,
    )
    protocol = latency.protocol(spec.resolution)
    table, predicted = None, 0.0
    if options.predict:  # first, so that the measurement is in the table's drift-correction unit
        table = latency_evaluator(replace(latency, mode="lut"), spec.resolution)
        predicted = table(spec)
    unit = table.table.reference_ms if isinstance(table, LutLatency) else None
    result = measure_many([spec], protocol, rounds=options.rounds, reference_ms=unit)[0]
    # the resolution is in the protocol line
    label = arch_label(options.arch, width_mult=options.width_mult, num_classes=options.num_classes)
    print(f"{label}: {result}")
    print(f"protocol: {protocol.describe()}")
    if table is not None:
        print(
            f"lookup table: {predicted:.3f} ms ({(predicted - result.ms) / result.ms:+.1%} vs measured; "
            f"{table.describe()})"
        )
