"""What a search optimizes: MnasNet's soft reward, a hard latency budget, or a Pareto front.

* ``soft``:   maximize ``ACC * (LAT / TARGET) ** w`` (MnasNet; V3 uses w = -0.07 for Large,
  -0.15 for Small).
* ``hard``:   maximize ``ACC``; candidates over the target are infeasible through Optuna's
  constraints (``LAT - TARGET <= 0``), so samplers learn where the boundary is.
* ``pareto``: maximize ``ACC`` and minimize ``LAT``; the result is the Pareto front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optuna.study import StudyDirection

from search_spaces.errors import ConfigError

MODES = ("soft", "hard", "pareto")
CONSTRAINT_ATTR = "constraint"  # name of the latency constraint on trials (feasible when <= 0)


@dataclass
class ObjectiveConfig:
    """``target_ms`` wins over ``target_ratio`` (a multiple of the seed's latency). The schema of
    ``conf/objective/*.yaml``; ``w`` ranks candidates in tables in the hard and pareto modes."""

    mode: str = "soft"  # soft | hard | pareto
    w: float = -0.15
    target_ms: float | None = None  # latency target in ms; when set it wins over target_ratio
    target_ratio: float | None = 0.85  # target = target_ratio x the seed's latency


@dataclass(frozen=True)
class Objective:
    """An objective with its latency target resolved to milliseconds."""

    mode: str
    target_ms: float
    w: float = -0.07

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"objective.mode: {self.mode!r} is not one of {', '.join(MODES)}")
        target = self.target_ms
        if not (isinstance(target, (int, float)) and target > 0 and math.isfinite(target)):
            raise ConfigError(f"objective.target_ms must be a positive number, got {self.target_ms!r}")
        if self.mode == "soft" and self.w > 0:
            raise ConfigError(f"objective.w must be <= 0 (a latency penalty), got {self.w}")

    @classmethod
    def from_config(cls, cfg: ObjectiveConfig, *, seed_latency_ms: float) -> Objective:
        if cfg.target_ms is not None:
            target = cfg.target_ms
        elif cfg.target_ratio is not None:
            if cfg.target_ratio <= 0:
                raise ConfigError(f"objective.target_ratio must be positive, got {cfg.target_ratio}")
            target = cfg.target_ratio * seed_latency_ms
        else:
            raise ConfigError("objective: set target_ms or target_ratio (of the seed's latency)")
        return cls(mode=cfg.mode, target_ms=float(target), w=cfg.w)

    @property
    def directions(self) -> list[StudyDirection]:
        if self.mode == "pareto":
            return [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
        return [StudyDirection.MAXIMIZE]

    @property
    def multi_objective(self) -> bool:
        return self.mode == "pareto"

    def feasible(self, latency_ms: float) -> bool:
        return latency_ms <= self.target_ms

    def constraint(self, latency_ms: float) -> float:
        """Optuna's convention: feasible when <= 0."""
        return latency_ms - self.target_ms

    def reward(self, accuracy: float, latency_ms: float) -> float:
        """One number to rank candidates by, whatever the mode: the soft reward, or for ``hard``
        the accuracy when feasible and the MnasNet hard penalty (w = -1) when not. ``pareto``
        ranks by the soft reward with ``w``."""
        if self.mode == "hard":
            return accuracy if self.feasible(latency_ms) else accuracy * (latency_ms / self.target_ms) ** -1
        return accuracy * (latency_ms / self.target_ms) ** self.w

    def values(self, accuracy: float, latency_ms: float) -> float | tuple[float, float]:
        """What the Optuna trial returns."""
        if self.mode == "soft":
            return self.reward(accuracy, latency_ms)
        if self.mode == "hard":
            return accuracy
        return accuracy, latency_ms

    def reach_note(self, *, fastest_ms: float, slowest_ms: float, seed_ms: float) -> str | None:
        """One line when the target is out of the space's reach: below the latency of its smallest
        architecture (a ``warning:``; no candidate can meet it) or above its largest (a ``note:``;
        the target constrains nothing). None when the target lies in between."""
        reach = (f"the space's smallest architecture takes {fastest_ms:.3f} ms, its largest "
                 f"{slowest_ms:.3f} ms, the seed {seed_ms:.3f} ms")
        if fastest_ms > self.target_ms:
            outcome = {"hard": "every trial will be infeasible and the winner over budget",
                       "soft": "every candidate will miss it (the soft reward still ranks them)",
                       "pareto": "no front member will meet it"}[self.mode]
            return (f"warning: objective target {self.target_ms:.4g} ms is out of reach ({reach}): "
                    f"{outcome}; raise objective.target_ms or objective.target_ratio")
        if slowest_ms <= self.target_ms:
            return (f"note: objective target {self.target_ms:.4g} ms is above every candidate ({reach}): "
                    "the target does not constrain this search")
        return None
