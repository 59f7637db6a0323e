"""Typed configuration of a NetAdapt refinement (the schema behind ``conf/netadapt/*.yaml``),
checked once, when it is built."""

from __future__ import annotations

from dataclasses import dataclass

from search.netadapt.proposals import KINDS
from search.netadapt.subnets import SUBNET_KINDS
from search_spaces.errors import ConfigError

METRICS = ("acc_per_latency", "accuracy")


@dataclass
class NetAdaptConfig:
    """The goal is ``target_ms`` (absolute) when set, else ``target_ratio`` x the seed's
    latency; the per-iteration latency cut is ``delta_ratio`` x the seed's latency (paper: 0.01).

    With ``supernet`` (a run dir of ``mobilenas supernet action=train``) the seed must be an
    architecture of the supernet's space; each proposal is a sub-network of that space (``kinds`` a
    subset of :data:`~search.netadapt.subnets.SUBNET_KINDS`), scored on the supernet with no
    fine-tuning (``short_steps`` and ``pretrain_steps`` unused); the final network starts from its
    supernet weights and is fine-tuned ``final_steps``. Without it, proposals shrink widths
    (``kinds`` a subset of :data:`~search.netadapt.proposals.KINDS`) and each is fine-tuned.

    Raises :class:`~search_spaces.errors.ConfigError` naming the offending key when built with
    a bad value (``dataclasses.replace`` checks the copy too)."""

    target_ms: float | None = None
    target_ratio: float | None = 0.8
    delta_ratio: float = 0.01
    short_steps: int = 50  # fine-tuning steps of each proposal
    final_steps: int = 500  # fine-tuning steps of the final network
    metric: str = "acc_per_latency"  # or "accuracy" (NetAdapt's original)
    max_iterations: int = 100
    kinds: list[str] | None = None  # null: all (exp, bottleneck; supernet: exp, kernel, se, width, depth)
    seed: int = 0
    finetune_lr_scale: float = 0.5  # fine-tuning learning rate = trainer.lr x this
    pretrain_steps: int = 300  # train a seed without weights this many steps first (0: refine it untrained)
    supernet: str | None = None  # supernet run dir: proposals are sub-networks scored on it, not fine-tuned

    def __post_init__(self) -> None:
        self.validate()

    @property
    def ratio(self) -> float | None:
        """The target as a fraction of the seed's latency; None when ``target_ms`` is set (it wins)."""
        return None if self.target_ms is not None else self.target_ratio

    @property
    def proposal_kinds(self) -> tuple[str, ...]:
        """The kinds of proposals tried: ``kinds``, or every kind of the mode when it is null."""
        if self.kinds is not None:
            return tuple(self.kinds)
        return SUBNET_KINDS if self.supernet else KINDS

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
        if self.supernet is not None and not self.supernet:
            raise ConfigError("netadapt.supernet: must be a supernet run dir or null, got ''")
        allowed, mode = (SUBNET_KINDS, " with netadapt.supernet") if self.supernet else (KINDS, "")
        kinds = self.proposal_kinds
        if not kinds or any(k not in allowed for k in kinds):
            raise ConfigError(f"netadapt.kinds: {list(kinds)} must be a non-empty subset of "
                              f"{', '.join(allowed)}{mode}")
