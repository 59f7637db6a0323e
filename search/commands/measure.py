"""``mobilenas measure``: one architecture timed end to end, printed with its protocol."""

from __future__ import annotations

from dataclasses import dataclass, replace

from omegaconf import DictConfig

from evaluators.latency import LatencyConfig, latency_evaluator, measure_many
from search.commands.show import resolve_arch
from search.config import ConfigError, typed


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
    result = measure_many([spec], protocol, rounds=options.rounds)[0]
    print(f"{options.arch}: {result}")
    print(f"protocol: {protocol.describe()}")
    if options.predict:
        table = latency_evaluator(replace(latency, mode="lut"), spec.resolution)
        predicted = table(spec)
        print(
            f"lookup table: {predicted:.3f} ms ({(predicted - result.ms) / result.ms:+.1%} vs measured; "
            f"{table.describe()})"
        )
