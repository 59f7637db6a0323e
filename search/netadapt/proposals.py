"""NetAdapt proposals: pure spec logic, no torch.

Each iteration of NetAdapt proposes, for every option, the widest network that cuts latency by
at least ``delta_ms`` (NetAdapt's rule: keep as many channels as the latency cut allows):

- ``exp``: shrink the expansion width of one block. Blocks without an expansion conv
  (``exp == in``) are skipped: shrinking them would add an expansion conv.
- ``bottleneck``: shrink the output width of a :class:`BottleneckGroup` -- a layer that sets a
  width (the stem, or a block that changes width or stride) and the stride-1 same-width blocks
  after it, whose residual adds tie them to that width. Every block of the group gets the new
  ``out``; blocks reading the width without an expansion conv (``exp == in``) shrink ``exp``
  with it, so they stay without one.

Widths go down in steps of :data:`STEP` channels (multiples of 8, never below
:data:`MIN_CHANNELS`). A width that would change the network's structure -- add or remove an
expansion conv or a residual connection -- is skipped, so every proposal's weights can be
inherited by truncating channels (:mod:`search.netadapt.inherit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from search_spaces.spec import ArchSpec

KINDS = ("exp", "bottleneck")
STEP = 8
MIN_CHANNELS = 8

LatencyFn = Callable[[ArchSpec], float]


@dataclass(frozen=True)
class BottleneckGroup:
    """Layers whose outputs share one width because residual adds tie them together.

    ``stem`` is true for the first group, whose width the stem sets (its ``blocks`` are then
    the residual blocks right after the stem, possibly none); otherwise ``blocks[0]`` sets the
    width and the other blocks are its residual partners.
    """

    stem: bool
    blocks: tuple[int, ...]
    width: int

    def readers(self, num_blocks: int) -> tuple[int, ...]:
        """Blocks whose input is this group's width (members with residuals and the next block)."""
        members = self.blocks if self.stem else self.blocks[1:]
        after = (self.blocks[-1] + 1) if self.blocks else 0
        return members + ((after,) if after < num_blocks else ())


@dataclass(frozen=True)
class Proposal:
    """One candidate network and what was changed to get it. ``old_channels``/``new_channels`` are
    channels for the width kinds (``exp``, ``bottleneck``, ``width``), the kernel size for
    ``kernel``, 1/0 for ``se`` and the stage's depth for ``depth`` (the names of the history's keys)."""

    kind: str  # KINDS here; SUBNET_KINDS (search.netadapt.subnets) for sub-networks of a space
    blocks: tuple[int, ...]  # the blocks changed (kind "depth": the blocks dropped)
    stem: bool  # the stem's width shrank too (bottleneck of the first group)
    old_channels: int
    new_channels: int
    latency_before_ms: float
    latency_after_ms: float
    spec: ArchSpec

    @property
    def latency_cut_ms(self) -> float:
        return self.latency_before_ms - self.latency_after_ms

    @property
    def label(self) -> str:
        """Short text form, e.g. ``exp b5 120->112`` or ``bottleneck stem+b0 16->8``."""
        where = "+".join((["stem"] if self.stem else []) + [f"b{i}" for i in self.blocks])
        return f"{self.kind} {where} {self.old_channels}->{self.new_channels}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the spec as its one-line string)."""
        return {
            "label": self.label,
            "kind": self.kind,
            "blocks": list(self.blocks),
            "stem": self.stem,
            "old_channels": self.old_channels,
            "new_channels": self.new_channels,
            "latency_before_ms": self.latency_before_ms,
            "latency_after_ms": self.latency_after_ms,
            "spec": str(self.spec),
        }


def bottleneck_groups(spec: ArchSpec) -> tuple[BottleneckGroup, ...]:
    """The groups of layers that share a bottleneck width, stem first, in order."""
    inputs = spec.block_inputs()
    groups: list[BottleneckGroup] = []
    stem, members, width = True, [], spec.stem.channels
    for i, block in enumerate(spec.blocks):
        if block.has_residual(inputs[i]):
            members.append(i)
            continue
        groups.append(BottleneckGroup(stem, tuple(members), width))
        stem, members, width = False, [i], block.out
    groups.append(BottleneckGroup(stem, tuple(members), width))
    return tuple(groups)


def structure(spec: ArchSpec) -> tuple[tuple[bool, bool], ...]:
    """Per block: (has an expansion conv, has a residual connection)."""
    inputs = spec.block_inputs()
    return tuple((b.has_expansion(c), b.has_residual(c)) for b, c in zip(spec.blocks, inputs))


def narrower_widths(width: int) -> Iterator[int]:
    """Multiples of :data:`STEP` below ``width``, widest first, down to :data:`MIN_CHANNELS`."""
    start = (width - 1) // STEP * STEP
    yield from range(start, MIN_CHANNELS - 1, -STEP)


def shrink_exp(spec: ArchSpec, index: int, exp: int) -> ArchSpec:
    """``spec`` with block ``index``'s expansion width set to ``exp``."""
    blocks = list(spec.blocks)
    blocks[index] = blocks[index].replace(exp=exp)
    return spec.with_blocks(blocks)


def shrink_group(spec: ArchSpec, group: BottleneckGroup, width: int) -> ArchSpec:
    """``spec`` with ``group``'s width set to ``width``; blocks reading it without an expansion
    conv keep ``exp == in``."""
    blocks = list(spec.blocks)
    for i in group.blocks:
        blocks[i] = blocks[i].replace(out=width)
    for i in group.readers(len(blocks)):
        if blocks[i].exp == group.width:
            blocks[i] = blocks[i].replace(exp=width)
    changed = spec.with_blocks(blocks)
    if group.stem:
        changed = changed.replace(stem=replace(spec.stem, channels=width))
    return changed


def first_cut(
    candidates: Iterable[tuple[int, ArchSpec]],
    latency_ms: LatencyFn,
    before: float,
    delta_ms: float,
) -> tuple[int, ArchSpec, float] | None:
    """The first candidate (``(new value, spec)``, biggest first) that cuts latency by ``delta_ms``."""
    for value, candidate in candidates:
        after = latency_ms(candidate)
        if before - after >= delta_ms:
            return value, candidate, after
    return None


def _same_structure(spec: ArchSpec,
                    candidates: Iterator[tuple[int, ArchSpec]]) -> Iterator[tuple[int, ArchSpec]]:
    """The candidates that keep ``spec``'s expansion convs and residuals (their weights can be inherited)."""
    shape = structure(spec)
    return ((width, candidate) for width, candidate in candidates if structure(candidate) == shape)


def propose(
    spec: ArchSpec,
    latency_ms: LatencyFn,
    delta_ms: float,
    *,
    kinds: Sequence[str] = KINDS,
) -> list[Proposal]:
    """Every NetAdapt proposal for ``spec``: one per option that can cut ``delta_ms``.

    Args:
        spec: the current network.
        latency_ms: spec -> latency in ms (measured or predicted); called once per width tried.
        delta_ms: the least latency cut a proposal must reach (> 0).
        kinds: which options to propose, a subset of :data:`KINDS`.

    Returns:
        ``exp`` proposals in block order, then ``bottleneck`` proposals in group order.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds: {unknown} not allowed; use a subset of {', '.join(KINDS)}")
    if not delta_ms > 0:
        raise ValueError(f"delta_ms must be > 0, got {delta_ms}")
    before = latency_ms(spec)
    proposals: list[Proposal] = []
    if "exp" in kinds:
        inputs = spec.block_inputs()
        for i, block in enumerate(spec.blocks):
            if not block.has_expansion(inputs[i]):
                continue
            widths = narrower_widths(block.exp)
            found = first_cut(_same_structure(spec, ((w, shrink_exp(spec, i, w)) for w in widths)),
                              latency_ms, before, delta_ms)
            if found:
                width, child, after = found
                proposals.append(Proposal("exp", (i,), False, block.exp, width, before, after, child))
    if "bottleneck" in kinds:
        for group in bottleneck_groups(spec):
            widths = narrower_widths(group.width)
            found = first_cut(_same_structure(spec, ((w, shrink_group(spec, group, w)) for w in widths)),
                              latency_ms, before, delta_ms)
            if found:
                width, child, after = found
                proposals.append(Proposal("bottleneck", group.blocks, group.stem, group.width, width,
                                          before, after, child))
    return proposals
