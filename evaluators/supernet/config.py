"""Typed configuration of supernet training (the schema behind ``supernet.*`` in ``conf/supernet.yaml``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from search_spaces.errors import ConfigError

DISTILL_MODES = ("kl", "soft_ce", "off")
# Progressive shrinking (Once-for-All): the dimensions that become elastic in each phase, in order.
PHASES = ("full", "kernel", "depth", "expansion")


@dataclass
class SupernetTrainConfig:
    """How one supernet training step is built (BigNAS's sandwich rule, OFA's shrinking).

    Every step trains the largest sub-network, the smallest and ``num_random`` random ones on the
    same batch, their gradients summed, then one optimizer step. With ``distill`` the largest's
    soft labels (detached) teach the others (``kl``: KL divergence, ``soft_ce``: cross-entropy
    with soft targets; same gradients, the losses differ by the teacher's entropy); ``off``: every
    sub-network learns from the labels. ``progressive_shrinking`` makes the space elastic in
    phases (full network, then kernel, depth, expansion and the rest), ``phases`` giving each
    phase's share of the budget, with channels re-sorted by importance when a phase begins.
    """

    num_random: int = 2
    distill: str = "kl"  # kl | soft_ce | off
    progressive_shrinking: bool = False
    phases: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25, 0.25])

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        if self.num_random < 0:
            raise ConfigError(f"supernet.num_random: must be >= 0, got {self.num_random}")
        if self.distill not in DISTILL_MODES:
            raise ConfigError(f"supernet.distill: must be one of {', '.join(DISTILL_MODES)}, "
                              f"got {self.distill!r}")
        if len(self.phases) != len(PHASES) or any(not 0 <= p <= 1 for p in self.phases) \
                or not math.isclose(sum(self.phases), 1.0, abs_tol=1e-6):
            raise ConfigError(f"supernet.phases: {len(PHASES)} fractions in [0, 1] summing to 1 "
                              f"(budget shares of {', '.join(PHASES)}), got {list(self.phases)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
