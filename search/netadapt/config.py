"""Typed configuration of a NetAdapt refinement (the schema behind ``conf/netadapt/*.yaml``),
checked once, when it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from search.netadapt.proposals import KINDS
from search_spaces.errors import ConfigError

METRICS = ("acc_per_latency", "accuracy")


@dataclass
class NetAdaptConfig:
    """The goal is ``target_ms`` (absolute) when set, else ``target_ratio`` x the seed's
    latency; the per-iteration latency cut is ``delta_ratio`` x the seed's latency (paper: 0.01).

    Raises :class:`~search_spaces.errors.ConfigError` naming the offending key when built with
    a bad value (``dataclasses.replace`` checks the copy too)."""

    target_ms: float | None = None
    target_ratio: float | None = 0.8
    delta_ratio: float = 0.01
    short_steps: int = 50  # fine-tuning steps of each proposal
    final_steps: int = 500  # fine-tuning steps of the final network
    metric: str = "acc_per_latency"  # or "accuracy" (NetAdapt's original)
    max_iterations: int = 100
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    seed: int = 0
    finetune_lr_scale: float = 0.5  # fine-tuning learning rate = trainer.lr x this
    pretrain_steps: int = 300  # train a seed without weights this many steps first (0: refine it untrained)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def ratio(self) -> float | None:
        """The target as a fraction of the seed's latency; None when ``target_ms`` is set (it wins)."""
        return None if self.target_ms is not None else self.target_ratio

    def validate(self) -> None:
        """Raise :class:`~search_spaces.errors.ConfigError` naming the offending key."""
        if self.target_ms is None and self.target_ratio is None:
            raise ConfigError("netadapt: set target_ms (absolute, ms) or target_ratio (x the seed's latency)")
        if self.target_ms is not None and not self.target_ms > 0:
            raise ConfigError(f"netadapt.target_ms: must be > 0, got {self.target_ms}")
        if self.target_ratio is not None and not 0 < self.target_ratio <= 1:
            raise ConfigError(f"netadapt.target_ratio: must be in (0, 1], got {self.target_ratio}")
        if not 0 < self.delta_ratio < 1:
            raise ConfigError(f"netadapt.delta_ratio: must be in (0, 1), got {self.delta_ratio}")
        if not self.finetune_lr_scale > 0:
            raise ConfigError(f"netadapt.finetune_lr_scale: must be > 0, got {self.finetune_lr_scale}")
        for name, value in (("short_steps", self.short_steps), ("final_steps", self.final_steps),
                            ("max_iterations", self.max_iterations), ("pretrain_steps", self.pretrain_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"netadapt.{name}: must be an integer >= 0, got {value!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"netadapt.metric: {self.metric!r} is not one of {', '.join(METRICS)}")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"netadapt.kinds: {list(self.kinds)} must be a non-empty subset of "
                              f"{', '.join(KINDS)}")
