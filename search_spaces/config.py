"""Typed configuration of a search space (the schema behind ``conf/space/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from search_spaces.errors import SpecError
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.serialize import load_spec
from search_spaces.space import SearchSpace


@dataclass
class SpaceConfig:
    """``seed``: a reference name, spec file or spec string; the rest are the choices."""

    seed: str = "mobilenet_v3_large"
    width_mult: float = 1.0
    depth_deltas: list[int] = field(default_factory=lambda: [-1, 0, 1])
    widths: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    kernels: list[int] = field(default_factory=lambda: [3, 5, 7])
    expansions: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.5])
    se: list[bool] = field(default_factory=lambda: [False, True])
    acts: list[str] = field(default_factory=lambda: ["RE", "HS"])


def build_space(cfg: SpaceConfig, *, num_classes: int, resolution: int, in_channels: int = 3) -> SearchSpace:
    """The space of ``cfg`` with its seed set to the task's classes, resolution and input
    channels."""
    if cfg.seed in REFERENCES:
        seed = reference_spec(cfg.seed, width_mult=cfg.width_mult, num_classes=num_classes,
                              resolution=resolution)
    elif cfg.width_mult != 1.0:
        raise SpecError(f"space.width_mult applies to reference seeds ({', '.join(REFERENCES)}) only")
    else:
        seed = load_spec(cfg.seed, num_classes=num_classes, resolution=resolution)
    if seed.in_channels != in_channels:
        seed = seed.replace(in_channels=in_channels)
    return SearchSpace(
        seed=seed,
        depth_deltas=tuple(cfg.depth_deltas),
        widths=tuple(cfg.widths),
        kernels=tuple(cfg.kernels),
        expansions=tuple(cfg.expansions),
        se=tuple(cfg.se),
        acts=tuple(cfg.acts),
    )
