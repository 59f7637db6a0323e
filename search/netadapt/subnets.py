"""NetAdapt proposals inside a search space (refining with a supernet): pure spec logic, no torch.

Every proposal is an architecture of the space, so a supernet of that space scores it without
fine-tuning. Per option, the biggest smaller choice that cuts latency by at least ``delta_ms``
(NetAdapt's rule, as in :func:`~search.netadapt.proposals.propose`):

- ``exp``: one block's expansion, to a smaller choice of ``space.expansions``;
- ``kernel``: one block's depthwise kernel, to a smaller choice of ``space.kernels``;
- ``se``: one block's squeeze-and-excitation off (when the space allows it);
- ``width``: one stage's output width, to a smaller choice of ``space.widths``;
- ``depth``: one stage's depth, to a smaller choice of its depths (its last blocks dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from search.netadapt.proposals import LatencyFn, Proposal, first_cut
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec

SUBNET_KINDS = ("exp", "kernel", "se", "width", "depth")
_BLOCK_KINDS = {"exp": "expansions", "kernel": "kernels", "se": "se"}  # kind -> the space's choices


def _smaller(choices: Sequence[Any], current: Any) -> list[Any]:
    """The choices below ``current``, biggest first (``False`` < ``True`` for SE)."""
    return sorted((c for c in choices if c < current), reverse=True)


def _variants(space: SearchSpace, params: dict[str, Any], key: str, values: Sequence[Any],
              value_of: Any) -> Iterator[tuple[int, ArchSpec]]:
    """``(value_of(v), spec)`` for each ``v`` of ``values`` set as parameter ``key``."""
    for value in values:
        yield int(value_of(value)), space.spec_from_params({**params, key: value})


def propose_subnets(space: SearchSpace, spec: ArchSpec, latency_ms: LatencyFn, delta_ms: float, *,
                    kinds: Sequence[str] = SUBNET_KINDS) -> list[Proposal]:
    """Every proposal for ``spec`` (an architecture of ``space``): one per option of ``kinds`` whose
    biggest smaller choice that cuts ``delta_ms`` exists. Per block (in order) ``exp``, ``kernel``,
    ``se``; then per stage ``width``, ``depth``. :class:`SpecError` when ``spec`` is not in ``space``."""
    unknown = [k for k in kinds if k not in SUBNET_KINDS]
    if unknown:
        raise ValueError(f"kinds: {unknown} not allowed; use a subset of {', '.join(SUBNET_KINDS)}")
    if not delta_ms > 0:
        raise ValueError(f"delta_ms must be > 0, got {delta_ms}")
    params = space.params_of(spec)
    before = latency_ms(spec)
    block_props: list[Proposal] = []
    stage_props: list[Proposal] = []

    def add(into: list[Proposal], kind: str, blocks: tuple[int, ...], old: int,
            candidates: Iterator[tuple[int, ArchSpec]]) -> None:
        found = first_cut(candidates, latency_ms, before, delta_ms)
        if found is not None:
            new, child, after = found
            into.append(Proposal(kind, blocks, False, old, new, before, after, child))

    start = 0
    for stage in space.stages:
        prefix, depth = f"s{stage.index}", params[f"s{stage.index}.depth"]
        for j in range(depth):
            name, template = f"{prefix}.b{j}", stage.template(j)
            for kind in (k for k in _BLOCK_KINDS if k in kinds):
                key = f"{name}.{kind}"
                choices = getattr(space, _BLOCK_KINDS[kind])
                value_of = (lambda e, t=template: space.block_exp(t, e)) if kind == "exp" else int
                add(block_props, kind, (start + j,), int(value_of(params[key])),
                    _variants(space, params, key, _smaller(choices, params[key]), value_of))
        blocks = tuple(range(start, start + depth))
        if "width" in kinds:
            key = f"{prefix}.width"
            add(stage_props, "width", blocks, space.stage_width(stage, params[key]),
                _variants(space, params, key, _smaller(space.widths, params[key]),
                          lambda w, s=stage: space.stage_width(s, w)))
        if "depth" in kinds:
            found = first_cut(_variants(space, params, f"{prefix}.depth", _smaller(stage.depths, depth), int),
                              latency_ms, before, delta_ms)
            if found is not None:  # the blocks dropped are the stage's last ones
                fewer, child, after = found
                stage_props.append(Proposal("depth", blocks[fewer:], False, depth, fewer, before, after,
                                            child))
        start += depth
    return block_props + stage_props
