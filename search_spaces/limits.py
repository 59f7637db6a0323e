"""Upper bounds on the size of a spec, checked whenever a spec is validated.

A spec is user input (a string, a file, a width multiplier): without bounds, ``c1000000000``
or a mid-size width would allocate many gigabytes before anything could say no. Every spec
is checked against the *active* limits when it is created, so nothing huge is ever built.
The defaults leave room far beyond MobileNetV3 (widths up to 8192 channels, 64 blocks,
1024x1024 inputs); the command line sets them from its ``limits.*`` config, Python code with
:func:`spec_limits`::

    with spec_limits(SpecLimits(max_resolution=2048)):
        spec = reference_spec("mobilenet_v3_large", resolution=1600)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

from search_spaces.errors import SpecError


@dataclass(frozen=True)
class SpecLimits:
    """The largest spec that validates. Each field is the config key ``limits.<field>``."""

    max_channels: int = 8192  # any width: stem, expansion, block output, head, hidden
    max_blocks: int = 64
    max_resolution: int = 1024
    max_in_channels: int = 64
    max_classes: int = 100_000
    max_params: int = 250_000_000  # 1 GB of float32 weights
    max_activation: int = 2**28  # elements of the largest feature map of one image (1 GiB float32)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"limits.{item.name} must be an integer >= 1, got {value!r}")


_active = SpecLimits()


def active_limits() -> SpecLimits:
    """The limits every new spec is checked against."""
    return _active


def set_limits(limits: SpecLimits) -> SpecLimits:
    """Make ``limits`` the active limits; returns the ones they replace."""
    global _active
    if not isinstance(limits, SpecLimits):
        raise TypeError(f"expected SpecLimits, got {type(limits).__name__}")
    previous, _active = _active, limits
    return previous


@contextmanager
def spec_limits(limits: SpecLimits) -> Iterator[SpecLimits]:
    """Validate the specs created inside the block against ``limits``."""
    previous = set_limits(limits)
    try:
        yield limits
    finally:
        set_limits(previous)


def check_max(where: str, name: str, value: int, limit_field: str) -> None:
    """Raise :class:`SpecError` when ``value`` is above the active ``limit_field``."""
    limit = getattr(_active, limit_field)
    if value > limit:
        raise SpecError(f"{where}: {name} must be <= {limit:,} (limits.{limit_field}), got {value:,}")
