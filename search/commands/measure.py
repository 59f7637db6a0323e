"""``mobilenas measure``: one architecture timed end to end, printed with its protocol."""

from __future__ import annotations

from dataclasses import dataclass, replace

from omegaconf import DictConfig

from evaluators.latency import LatencyConfig, latency_evaluator, measure_many
from search.arch import arch_label, resolve_arch
from search.config import typed
from search_spaces.errors import ConfigError


@dataclass
class MeasureConfig:
    arch: str = "mobilenet_v3_large"
    width_mult: float = 1.0
    num_classes: int | None = None
    resolution: int | None = None
    rounds: int = 1
    predict: bool = False


def run(cfg: DictConfig) -> None:
    latency = typed(cfg.latency, LatencyConfig, "latency")
    options = typed({k: v for k, v in cfg.items() if k != "latency"}, MeasureConfig, "measure")
    if options.rounds < 1:
        raise ConfigError(f"measure.rounds: must be >= 1, got {options.rounds}")
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
    unit = table.table.reference_ms if table is not None else None
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
