"""Typed configuration of a NetAdapt refinement (the schema behind ``conf/netadapt/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from search.netadapt.loop import METRICS
from search.netadapt.proposals import KINDS
from search_spaces.errors import ConfigError


@dataclass
class NetAdaptConfig:
    """The goal is ``target_ms`` (absolute) when set, else ``target_ratio`` x the seed's
    latency; the per-iteration latency cut is ``delta_ratio`` x the seed's latency (paper: 0.01)."""

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

    def validate(self) -> None:
        """Raise :class:`~search.config.ConfigError` naming the offending key."""
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
        for name in ("short_steps", "final_steps", "max_iterations", "pretrain_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"netadapt.{name}: must be >= 0, got {getattr(self, name)}")
        if self.metric not in METRICS:
            raise ConfigError(f"netadapt.metric: {self.metric!r} is not one of {', '.join(METRICS)}")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"netadapt.kinds: {self.kinds} must be a non-empty subset of "
                              f"{', '.join(KINDS)}")

    def loop_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~search.netadapt.loop.netadapt` this config sets."""
        return {
            "target_ms": self.target_ms,
            "target_ratio": None if self.target_ms is not None else self.target_ratio,
            "delta_ratio": self.delta_ratio,
            "short_steps": self.short_steps,
            "final_steps": self.final_steps,
            "metric": self.metric,
            "max_iterations": self.max_iterations,
            "kinds": list(self.kinds),
            "seed": self.seed,
        }
